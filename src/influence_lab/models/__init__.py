from .chargpt import CharGPT
from .dalle import DALLE
from .ddpm import DDPM
from .latent_ddpm import LatentDDPM
from .protocol import GenerativeModel
from .vae import VAE

__all__ = ["GenerativeModel", "VAE", "DDPM", "LatentDDPM", "CharGPT", "DALLE"]
