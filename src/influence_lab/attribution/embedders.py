"""Latent spaces for the content kernel.

- `model`: the generator's own `embed` (depends on the trained model);
- `autoencoder`: a small MLP autoencoder trained once on the dataset's content and cached by
  signature: a feature space that does not depend on the generator (as ImageNet features were in
  the original paper). Images are flattened pixels; texts are character n-gram counts;
- `classifier`: a small CNN trained once on the dataset's labels (`models.classifier`), cached by
  signature; its penultimate layer stands in for the ImageNet ResNet-50 features of the original
  paper (images with labels only);
- `pretrained`: a torchvision backbone loaded from a weights file the user names; never a download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..console import track
from ..errors import InfluenceLabError
from ..models.classifier import cached_classifier, classifier_features
from ..models.threads import FIT_THREADS, fixed_threads
from ..settings.attribution import EMBEDDER_KINDS, EmbedderSettings
from ..settings.attribution import AutoencoderEmbedder as AutoencoderSettings
from ..settings.attribution import ClassifierEmbedder as ClassifierSettings
from ..settings.attribution import PretrainedEmbedder as PretrainedSettings
from ..store.files import RunDir, atomic_write, read_json, write_json
from ..store.signature import signature


def _chunks(n: int, size: int = 512):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class ModelEmbedder:
    name = "model"

    def __init__(self, model, model_signature: str):
        self.model = model.eval()
        self.signature = signature("model-embedder", model_signature)

    @torch.no_grad()
    def embed(self, content, captions: list[str]) -> np.ndarray:
        out = []
        for sl in _chunks(len(captions)):
            chunk = (
                content[sl]
                if isinstance(content, list)
                else torch.as_tensor(np.asarray(content[sl]))
            )
            out.append(
                self.model.embed({"content": chunk, "caption": list(captions[sl])}).cpu().numpy()
            )
        return np.concatenate(out).astype(np.float32)


class _AE(nn.Module):
    def __init__(self, d_in: int, hidden: int, latent: int):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, d_in))

    def forward(self, x):
        return self.dec(self.enc(x))


class AutoencoderEmbedder:
    name = "autoencoder"

    def __init__(self, cfg: AutoencoderSettings, full_dataset, full_fingerprint: str, root: Path):
        self.cfg = cfg
        self.kind = "image" if "image" in full_dataset.column_names else "text"
        spec = {
            "hidden": cfg.hidden,
            "latent": cfg.latent_dim,
            "epochs": cfg.epochs,
            "lr": float(cfg.lr),
            "seed": cfg.seed,
            "data": full_fingerprint,
            "threads": FIT_THREADS,  # fitted at a fixed thread count (models.threads)
        }
        self.signature = signature("autoencoder", spec)
        self.run = RunDir(root, "embedders", "autoencoder", self.signature)
        if self.kind == "text":
            from sklearn.feature_extraction.text import CountVectorizer

            self.vectorizer = CountVectorizer(
                analyzer="char_wb", ngram_range=(1, 2), lowercase=True
            )
            self.vectorizer.fit(full_dataset["text"])
        # fitted once across processes (the run's claim), at a fixed thread count
        self.net = self.run.compute_once(
            self._load, lambda: self._train(self._features(self._content(full_dataset)), spec)
        )

    @staticmethod
    def _content(ds):
        if "image" in ds.column_names:
            return np.asarray(ds.with_format("numpy")["image"], dtype=np.float32)
        return list(ds["text"])

    def _features(self, content) -> torch.Tensor:
        if self.kind == "image":
            return torch.as_tensor(np.asarray(content, dtype=np.float32)).flatten(1)
        return torch.as_tensor(self.vectorizer.transform(content).toarray(), dtype=torch.float32)

    def _train(self, x: torch.Tensor, spec: dict) -> _AE:
        """Fit at one thread (`models.threads`): the same weights at any thread count."""
        gen = torch.Generator().manual_seed(spec["seed"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec["seed"])
            net = _AE(x.shape[1], spec["hidden"], spec["latent"])
        opt = torch.optim.Adam(net.parameters(), lr=spec["lr"])
        with fixed_threads():
            for _ in track(range(spec["epochs"]), "autoencoder embedder"):
                for idx in torch.randperm(len(x), generator=gen).split(128):
                    loss = (net(x[idx]) - x[idx]).pow(2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        atomic_write(self.run / "weights.pt", lambda p: torch.save(net.state_dict(), p))
        write_json(
            self.run / "spec.json",
            {**spec, "d_in": int(x.shape[1]), "final_mse": float(loss.detach())},
        )
        return net.eval()

    def _load(self) -> _AE:
        spec = read_json(self.run / "spec.json")
        net = _AE(spec["d_in"], spec["hidden"], spec["latent"])
        net.load_state_dict(
            torch.load(self.run / "weights.pt", map_location="cpu", weights_only=True)
        )
        return net.eval()

    @torch.no_grad()
    def embed(self, content, captions: list[str]) -> np.ndarray:
        with fixed_threads():  # the same vectors at any thread count, as the fit
            return self.net.enc(self._features(content)).numpy().astype(np.float32)


class ClassifierEmbedder:
    """The feature layer of a label CNN fitted once on every item of the dataset (the full pool,
    as a pretrained network would have seen it), cached under `<root>/embedders/classifier-*`."""

    name = "classifier"

    def __init__(self, cfg: ClassifierSettings, full_dataset, full_fingerprint: str, root: Path):
        if "image" not in full_dataset.column_names or "label" not in full_dataset.column_names:
            raise InfluenceLabError(
                "the classifier embedder needs images with labels (data=digits, fashion, or a "
                "source with a label column); use model or autoencoder here."
            )
        batch = full_dataset.with_format("numpy", columns=["image"])[:]  # one batch: fast
        images = np.asarray(batch["image"], dtype=np.float32)
        labels = np.asarray(full_dataset["label"])
        self.net, self.run = cached_classifier(
            images, labels, full_fingerprint, root, epochs=cfg.epochs, seed=cfg.seed
        )
        self.signature = self.run.signature

    def embed(self, content, captions: list[str]) -> np.ndarray:
        return classifier_features(self.net, content).astype(np.float32)


class PretrainedEmbedder:
    """A torchvision backbone (`arch`, e.g. resnet18) with weights from a local file."""

    name = "pretrained"

    def __init__(self, cfg: PretrainedSettings, name: str = "pretrained"):
        path = check_weights(name, cfg)
        try:
            import torchvision
        except Exception as exc:
            raise InfluenceLabError(
                f"the pretrained embedder needs torchvision, which is not importable here ({exc}); "
                f"install a torchvision that matches the installed torch."
            ) from exc
        net = torchvision.models.get_model(cfg.arch, weights=None)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.fc = nn.Identity() if hasattr(net, "fc") else net.fc
        self.net = net.eval()
        self.size = cfg.input_size
        self.signature = signature("pretrained", cfg.arch, _file_hash(path), self.size)

    @torch.no_grad()
    def embed(self, content, captions: list[str]) -> np.ndarray:
        x = torch.as_tensor(np.asarray(content, dtype=np.float32))
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = torch.nn.functional.interpolate(
            x, size=(self.size, self.size), mode="bilinear", align_corners=False
        )
        mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
        return np.concatenate(
            [self.net((x[sl] - mean) / std).numpy() for sl in _chunks(len(x), 64)]
        )


def _file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


KINDS = EMBEDDER_KINDS  # declared in settings.attribution


def check_weights(name: str, cfg) -> Path | None:
    """A pretrained embedder's weights must be a local file (nothing is downloaded): a question for
    the machine, asked at a stage's entry for every embedder the stage uses. Other kinds: None."""
    if getattr(cfg, "kind", None) != "pretrained":
        return None
    path = Path(cfg.weights).expanduser() if cfg.weights else None
    if path is None or not path.is_file():
        weights = "null" if cfg.weights is None else f"'{cfg.weights}'"
        raise InfluenceLabError(
            f"embedders.{name}.weights is {weights}, which is not a file; name a local "
            f"torchvision state-dict file for '{cfg.arch}' (nothing is downloaded)."
        )
    return path


def build_embedder(
    name: str, cfg: EmbedderSettings, *, model, model_signature: str, bundle, root: Path
):
    if cfg.kind == "model":
        return ModelEmbedder(model, model_signature)
    if cfg.kind == "autoencoder":
        return AutoencoderEmbedder(cfg, bundle.full, bundle.full_fingerprint, root)
    if cfg.kind == "classifier":
        return ClassifierEmbedder(cfg, bundle.full, bundle.full_fingerprint, root)
    if bundle.kind != "image":
        raise InfluenceLabError(
            "the pretrained embedder works on images; use model or autoencoder for text."
        )
    return PretrainedEmbedder(cfg, name)
