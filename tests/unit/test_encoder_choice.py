"""Which encoder serving uses: the distilled student only where it is faithful on what new users write too."""

from __future__ import annotations

import json

import pytest

from coldstart import artifacts
from coldstart.pipeline import PipelineConfig
from coldstart.text.encoder import ARTIFACT_FILE
from coldstart.text.probe import PROBE_TEXTS, probe_cosine
from trainers.stages import encoder_models

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("record, chosen", [
    ({"val_cosine": 0.97, "probe_cosine": 0.96}, "student"),
    ({"val_cosine": 0.97, "probe_cosine": 0.78}, "teacher"),  # catalogue texts alone: free text would suffer
    ({"val_cosine": 0.97}, "teacher"),  # never measured on free text
    ({"val_cosine": 0.90, "probe_cosine": 0.99}, "teacher"),
])
def test_the_student_serves_only_where_it_holds_on_held_out_and_free_text(tmp_path, record, chosen):
    artifacts.write_json(tmp_path / "encoder" / ARTIFACT_FILE, record)
    encoder_models(None, PipelineConfig(out=tmp_path), tmp_path)
    serving = json.loads((tmp_path / "serving.json").read_text())
    assert serving["encoder"] == chosen
    assert serving["encoder_probe_cosine"] == record.get("probe_cosine")


def test_the_probe_is_the_mean_cosine_over_its_texts():
    import numpy as np

    n = len(PROBE_TEXTS)
    a = np.tile([1.0, 0.0], (n, 1))
    b = np.asarray([[2.0, 0.0] if i % 2 else [0.0, 3.0] for i in range(n)])
    assert probe_cosine(a, a) == pytest.approx(1.0)
    assert probe_cosine(a, b) == pytest.approx(sum(i % 2 for i in range(n)) / n)
