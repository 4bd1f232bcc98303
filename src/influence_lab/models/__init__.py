from .base import GenerativeModel
from .chargpt import CharGPT
from .dalle import DALLE
from .ddpm import DDPM
from .latent_ddpm import LatentDDPM
from .vae import VAE

__all__ = ["GenerativeModel", "VAE", "DDPM", "LatentDDPM", "CharGPT", "DALLE"]
