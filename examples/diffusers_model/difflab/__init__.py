"""A lab's diffusion model built on Hugging Face diffusers (see unet.py)."""
