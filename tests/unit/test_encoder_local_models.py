"""The optional local encoders (`make install-mpnet`): a name resolves to the unpacked folder or fails saying how
to install it, never to a model hub; where all-mpnet-base-v2 is installed, our vectors are SentenceTransformer's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coldstart.text.encoder import MODELS_ENV, TextEncoder, models_dir, resolve_model_path

MPNET = models_dir() / "all-mpnet-base-v2"
TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "A woman aged 25-34, working as scientist. Liked movies: Heat, Casino, Fargo.",
    "x",
    "Ünïcödé and emoji 🎬 survive.",
    "A much longer text " * 20,
    "words " * 600,  # past mpnet's 384 tokens: truncated as SentenceTransformer truncates
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"])
def test_local_encoder_not_installed_names_its_make_target(name, tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="make install-mpnet"):
        resolve_model_path(name)
    (tmp_path / "all-mpnet-base-v2").mkdir()
    (tmp_path / "all-mpnet-base-v2" / "config.json").write_text("{}")
    assert resolve_model_path(name) == str(tmp_path / "all-mpnet-base-v2")


@pytest.mark.timeout(30)
def test_other_encoder_names_resolve_as_before(tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    assert Path(resolve_model_path("default")).is_dir()
    assert resolve_model_path("some/hub-id") == "some/hub-id"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


@pytest.mark.timeout(180)  # loading the 440 MB model twice: seconds, more on a busy machine
@pytest.mark.skipif(not (MPNET / "config.json").is_file(),
                    reason="all-mpnet-base-v2 not installed (make install-mpnet)")
def test_mpnet_encoder_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    encoder = TextEncoder(model="all-mpnet-base-v2", device="cpu", dtype="float32")
    assert (encoder.settings.pooling, encoder.settings.max_length, encoder.dim) == ("mean", 384, 768)
    reference = st.SentenceTransformer(str(MPNET), device="cpu", local_files_only=True).encode(
        TEXTS, normalize_embeddings=True, batch_size=2)
    ours = encoder.encode(TEXTS, batch_size=2)
    # A plain dot product: a wrong pooling moves the direction, a missing normalisation the length.
    cosines = (ours * reference).sum(1)
    assert cosines.min() >= 0.999, cosines
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert encoder.stats.truncated == 1
