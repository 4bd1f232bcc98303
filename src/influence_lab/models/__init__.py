from .base import GenerativeModel
from .chargpt import CharGPT
from .ddpm import DDPM
from .vae import VAE

__all__ = ["GenerativeModel", "VAE", "DDPM", "CharGPT"]
