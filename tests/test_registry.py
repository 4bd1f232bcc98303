"""The attributor interface: methods are found and refused by the registry through their traits
(never by a model's name), and no built-in method name is written in settings/ or stages/."""

import io
import tokenize
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from influence_lab.attribution.methods import ScoreTable, registry
from influence_lab.attribution.methods.gradient import DTrak
from influence_lab.errors import InfluenceLabError
from influence_lab.models.chargpt import CharGPT
from influence_lab.models.ddpm import DDPM
from influence_lab.models.vae import VAE
from influence_lab.settings import AttributionSettings, LDSSettings

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "influence_lab"


def settings(model="vae", methods="auto", lds=None, embedders=("model", "autoencoder"), **att):
    return SimpleNamespace(
        attribution=AttributionSettings(methods=methods, embedders=list(embedders), **att),
        lds=None if lds is None else LDSSettings(methods=lds),
        model=SimpleNamespace(name=model, timesteps=20 if model == "ddpm" else None),
        plugins=[],
    )


class VAEWithDTrakOutput(VAE):
    """A model of another name that declares the D-TRAK output function."""

    def output_dtrak(self, batch, noise):
        return self.measured_loss(batch, noise)


def labels(methods) -> list[str]:
    return [m.label for m in methods]


def test_methods_are_offered_by_capability_not_by_model_name():
    assert "dtrak" in DDPM.output_functions() and "dtrak" not in VAE.output_functions()
    assert VAEWithDTrakOutput.output_functions() == ["measured", "dtrak"]
    dtrak = registry.checked(settings("my_vae"), VAEWithDTrakOutput, "dtrak", "attribution.methods")
    assert (dtrak.label, dtrak.cls, dtrak.option, dtrak.tunes_damping) == (
        "dtrak",
        DTrak,
        None,
        True,
    )
    with pytest.raises(InfluenceLabError) as info:
        registry.resolved_methods(settings(methods=["fused", "dtrak"]), VAE)
    assert str(info.value) == (
        "attribution.methods has dtrak, which needs the model output function 'dtrak', which VAE "
        "(model=vae) does not declare (it has measured)."
    )
    assert labels(registry.resolved_methods(settings(lds="auto"), VAEWithDTrakOutput)[1])[-3:] == [
        "tracin",
        "trak",
        "dtrak",
    ]
    assert labels(registry.resolved_methods(settings(lds="auto"), VAE)[1])[-2:] == [
        "tracin",
        "trak",
    ]


def test_auto_and_the_needs_of_data_and_settings():
    assert labels(registry.resolved_methods(settings(), VAE)[0]) == [
        "paper",
        "fused",
        "caption_only",
        "raw_only",
        "latent_only",
    ]
    text = labels(registry.resolved_methods(settings("chargpt"), CharGPT)[0])
    assert text == ["fused", "caption_only", "raw_only", "latent_only"]
    with pytest.raises(
        InfluenceLabError,
        match=r"has paper, which needs image data, but model=chargpt works on text",
    ):
        labels(registry.resolved_methods(settings("chargpt", methods=["paper"]), CharGPT)[0])
    with pytest.raises(InfluenceLabError, match="latent_only, which needs at least one embedder"):
        registry.resolved_methods(settings(methods=["latent_only"], embedders=()), VAE)
    with pytest.raises(InfluenceLabError, match="names embedder 'clip', not in attribution"):
        labels(registry.resolved_methods(settings(methods=["latent:clip"]), VAE)[0])
    with pytest.raises(InfluenceLabError, match="dtrak_timesteps is 30 but model.timesteps is 20"):
        registry.checked(
            settings("ddpm", gradient={"dtrak_timesteps": 30}), DDPM, "dtrak", "lds.methods"
        )


def test_a_score_table_fills_items_outside_the_candidates_with_their_lowest_score():
    table = ScoreTable([np.array([3.0, 1.0]), np.array([5.0])], [np.array([2, 0]), np.array([1])])
    np.testing.assert_array_equal(table.dense(4), [[1.0, 1.0, 3.0, 1.0], [5.0, 5.0, 5.0, 5.0]])
    cand, scores = table.ranked(0, 4)
    assert cand.tolist() == [2, 0] and scores.tolist() == [3.0, 1.0]
    every = ScoreTable(np.arange(8.0).reshape(2, 4))
    assert every.ranked(1, 4)[0].tolist() == [0, 1, 2, 3]


def _string_literals(path: Path) -> list[tuple[int, str]]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    out = []
    for tok in tokens:
        if tok.type == tokenize.STRING and not tok.string.startswith(('"""', "'''")):
            out.append((tok.start[0], tok.string.strip("\"'")))
    return out


def test_no_method_name_is_written_in_settings_or_stages():
    names = set(registry.BUILT_INS) | {f"{p}:" for p in registry.WITH_OPTION}
    found = [
        f"{path.relative_to(PACKAGE)}:{line} {value!r}"
        for folder in ("settings", "stages")
        for path in sorted((PACKAGE / folder).glob("*.py"))
        for line, value in _string_literals(path)
        if value in names
    ]
    assert found == []
