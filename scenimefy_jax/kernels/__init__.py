"""XLA:CPU support below every model and job: native kernels compiled on first use (`onednn`, the
convolution kernel gradient) and the process's memory settings (`cpu_memory`)."""
