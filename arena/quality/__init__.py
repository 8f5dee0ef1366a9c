"""What an INT4 path costs in quality: a quantized model's token distributions against its reference (KL)."""
