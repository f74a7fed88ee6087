"""The rules that keep a healthy model healthy, each beside the case where it must still fire:
the plateau rule does not cut a run whose ranking still improves, a run still learning when a
budget ends is told apart from one that is not, the held-out stage's words follow its
statistics, and only what the user set counts as their settings (the runbook's recommended
config never)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatrank.config import RECOMMENDED, Config, file_keys, nest, settings_set
from gatrank.doctor.report import DoctorOptions
from gatrank.doctor.stages import heldout_reading
from gatrank.doctor.state import Diagnosis
from gatrank.doctor.symptoms import plateau, still_learning

ROOT = Path(__file__).resolve().parents[2]


def _records(losses, accs):
    return [{"epoch": 10 * k + 10, "loss": loss, "pairwise_accuracy": a}
            for k, (loss, a) in enumerate(zip(losses, accs, strict=True))]


def test_a_flat_loss_with_a_rising_ranking_is_no_plateau():
    flat = [3.4657] * 6
    rising = _records(flat, [0.50, 0.55, 0.60, 0.66, 0.71, 0.78])
    stuck = _records(flat, [0.50, 0.51, 0.50, 0.505, 0.50, 0.502])
    assert not plateau(rising, 30)
    assert plateau(stuck, 30)
    # a falling loss is no plateau, whatever the ranking does
    assert not plateau(_records([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], [0.5] * 6), 30)


def test_the_loss_plateau_is_measured_against_the_room_the_loss_has_to_fall():
    # ListNet on close targets: constant scores cost 3.46574, a perfect ordering 3.46550
    losses = [3.46574, 3.46572, 3.46569, 3.46566, 3.46563, 3.46560]
    stuck = [0.60, 0.61, 0.60, 0.61, 0.60, 0.61]
    assert plateau(_records(losses, stuck), 30)  # 1% of the loss itself: no progress
    assert not plateau(_records(losses, stuck), 30, floor=3.46550)  # 40% of its room
    flat = [3.46574] * 6
    assert plateau(_records(flat, stuck), 30, floor=3.46550)


def test_still_learning_reads_the_trend_of_the_last_half():
    learning = _records([0.69, 0.66, 0.63, 0.60, 0.57, 0.54], [0.50, 0.55, 0.60, 0.64, 0.68,
                                                               0.72])
    trend = still_learning(learning)
    assert trend is not None
    assert trend["slope"] == pytest.approx(0.004, rel=0.1)
    assert trend["to"] == 0.72 and trend["epochs"][1] == 60
    assert trend["to_pass"] == pytest.approx((0.9 - 0.72) / trend["slope"])
    # a trend that reaches 0.9 only after the epochs left is not "still learning"
    assert still_learning(learning, within=trend["to_pass"] + 1) is not None
    assert still_learning(learning, within=trend["to_pass"] - 1) is None
    flat = _records([0.69] * 6, [0.50, 0.51, 0.50, 0.50, 0.51, 0.50])
    assert still_learning(flat) is None
    assert still_learning(learning[:3]) is None  # too few records to tell
    worse = _records([0.5, 0.55, 0.6, 0.65, 0.7, 0.75], [0.5, 0.55, 0.6, 0.64, 0.68, 0.72])
    assert still_learning(worse) is None  # a rising loss is not learning


def _base(name: str, p: float, better: bool = False) -> dict:
    return {"name": name, "p": p, "lead": {"better": better}}


def test_held_out_words_follow_the_statistics():
    big = {"train": 400, "available": 400, "held": 200}
    assert heldout_reading(0.002, [], **big).status == "ok"
    # p < 0.05 is never "at chance"
    assert heldout_reading(0.024, [], **big).status == "weak"
    # at chance where a baseline ranks: does_not_generalize (Bonferroni over two baselines)
    r = heldout_reading(0.3, [_base("linear", 0.004), _base("fingerprint", 0.4)], **big)
    assert (r.status, r.cause) == ("failed", "does_not_generalize")
    r = heldout_reading(0.3, [_base("linear", 0.00998), _base("fingerprint", 0.4)], **big)
    assert r.cause != "does_not_generalize"
    # nothing ranks, on a sample that can judge: no_signal
    r = heldout_reading(0.3, [_base("linear", 0.3), _base("fingerprint", 0.2)], **big)
    assert (r.status, r.cause) == ("failed", "no_signal")


@pytest.mark.parametrize("sample, words", [
    ({"train": 64, "available": 400, "held": 200}, "64 of the 400"),
    ({"train": 64, "available": 64, "held": 64}, "too few"),
])
def test_held_out_sample_too_small_to_judge_names_no_cause(sample, words):
    r = heldout_reading(0.3, [_base("linear", 0.3), _base("fingerprint", 0.09)], **sample)
    assert r.status == "cannot judge" and not r.cause
    assert words in r.why


def test_beating_a_baseline_is_never_no_signal():
    r = heldout_reading(0.3, [_base("linear", 0.6, better=True)], train=400, available=400,
                        held=200)
    assert r.status == "cannot judge" and "beats the linear" in r.why


def test_recommended_config_is_the_runbooks_config_example():
    raw = yaml.safe_load((ROOT / "params" / "config_example.yaml").read_text())
    for key, value in RECOMMENDED.items():
        section, name = key.split(".")
        assert float(raw[section][name]) == pytest.approx(float(value)), key


def test_only_what_the_user_set_counts_as_theirs(tmp_path):
    assert settings_set(Config()) == {}
    mine = settings_set(Config().updated({"training.learning_rate": 0.01}))
    assert mine == {"training.learning_rate": 0.01}
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  learning_rate: 1e-3\n  batch_size: 64\n")
    keys = file_keys(path)
    assert keys == ["training.learning_rate", "training.batch_size"]
    cfg = Config().updated({"training.batch_size": 64})
    assert settings_set(cfg, keys) == {"training.learning_rate": 1e-3,
                                      "training.batch_size": 64}


def test_settings_nest_into_the_sections_a_config_file_holds(tmp_path):
    set_ = {"training.learning_rate": 0.01, "loss.temperature": 2.0, "training.batch_size": 8}
    nested = nest(set_)
    assert nested == {"training": {"learning_rate": 0.01, "batch_size": 8},
                      "loss": {"temperature": 2.0}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(nested))
    assert sorted(file_keys(path)) == sorted(set_)


def _doc(model, user_set):
    return Diagnosis(None, Config(), model, None, None, DoctorOptions(), 0, user_set=user_set)


def test_the_recommended_config_is_never_a_setting_to_judge():
    recommended = {k: v for k, v in RECOMMENDED.items() if k.startswith(("training", "model"))}
    assert _doc(None, recommended).own_settings() == {}
    assert _doc(None, {"training.learning_rate": 0.01}).own_settings() == {
        "training.learning_rate": 0.01}
    # model.dropout reaches gatrank's own GAT only
    assert _doc(None, {"model.dropout": 0.5}).own_settings() == {"model.dropout": 0.5}
    assert _doc("pkg.mod:Net", {"model.dropout": 0.5}).own_settings() == {}
