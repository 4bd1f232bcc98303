"""A diffusers `UNet2DModel` + `DDPMScheduler`, brought to influence-lab as a user would bring it.

The UNet predicts the noise; the scheduler gives the noise schedule (its betas and
alphas_cumprod). Subclassing influence-lab's `Diffusion` base supplies the rest of the model
protocol from them: the training loss, the fixed-noise measured loss, ancestral sampling, and
`output_dtrak` (D-TRAK's output function), so TracIn, TRAK and D-TRAK attribute it and
counterfactual retraining and LDS check them. The caption condition (influence-lab's bag of words)
enters the UNet as its class embedding (`class_embed_type="identity"`: added to the time
embedding), projected to the time embedding's width.

The UNet's GroupNorm and convolution blocks (no attention: `add_attention=False`) run under
`torch.func.vmap` (per-example gradients); packs (many models stepped as one) are not used for it
(`packable = False`): members retrain one by one.
"""

from __future__ import annotations

from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from influence_lab.models.ddpm import Diffusion


class UNetDenoiser(nn.Module):
    """eps = UNet(x_t, t, class embedding = W c)."""

    def __init__(self, shape, channels: list[int], cond_dim: int):
        super().__init__()
        self.unet = UNet2DModel(
            sample_size=shape[1],
            in_channels=shape[0],
            out_channels=shape[0],
            block_out_channels=tuple(channels),
            layers_per_block=1,
            down_block_types=("DownBlock2D",) * len(channels),
            up_block_types=("UpBlock2D",) * len(channels),
            norm_num_groups=8,
            class_embed_type="identity",
            add_attention=False,  # no attention in the mid block: a CPU-sized UNet
        )
        self.cond = nn.Linear(cond_dim, channels[0] * 4)  # the UNet's time-embedding width

    def forward(self, x, t, c):
        return self.unet(x, t, class_labels=self.cond(c)).sample

    def features(self, x, t, c):
        """The UNet's bottleneck (the mid block's output), flattened: the model's own space."""
        found = {}
        hook = self.unet.mid_block.register_forward_hook(lambda m, i, o: found.setdefault("h", o))
        try:
            self.forward(x, t, c)
        finally:
            hook.remove()
        return found["h"].flatten(1)


class DiffusersDDPM(Diffusion):
    packable = False  # members are fitted one by one (no vmapped pack of UNets)

    def __init__(
        self,
        data_shape: list[int],
        vocab: list[str],
        conditional: bool = True,
        channels: tuple[int, ...] = (32, 64),
        cond_dim: int = 64,
        timesteps: int = 200,
        beta_schedule: str = "linear",
        p_uncond: float = 0.1,
        guidance: float = 2.0,
        loss_timesteps: int = 10,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
    ):
        super().__init__(vocab, conditional, cond_dim, lr, weight_decay)
        self.save_hyperparameters()
        self.space = tuple(data_shape)
        self.net = UNetDenoiser(self.space, list(channels), cond_dim)
        scheduler = DDPMScheduler(num_train_timesteps=timesteps, beta_schedule=beta_schedule)
        self.register_buffer("betas", scheduler.betas.float(), persistent=False)
        self.register_buffer("alphas_bar", scheduler.alphas_cumprod.float(), persistent=False)
