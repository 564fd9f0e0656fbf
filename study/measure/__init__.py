"""Measuring a network and a trial: Y-PSNR/SSIM (metrics), whole-image inference, benchmark
evaluation, energy (meters for NVML and tegrastats), the latency timer, and on shared GPUs the
locks, idle baselines, exclusive energy windows and energy attribution."""
