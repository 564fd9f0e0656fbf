"""srstudy.trials: what one trial does (teacher cache, distillation)."""
