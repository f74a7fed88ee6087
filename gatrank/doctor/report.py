"""The doctor's vocabulary: the cause ids with their fixes, the thresholds, the verdicts, and
the report types (:class:`Cause`, :class:`Stage`, :class:`DoctorReport`) with their JSON and
terminal forms; :class:`DoctorOptions` holds the run budgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gatrank.checks.verdict import RANKING_GAIN, THRESHOLDS
from gatrank.render import doctor_html

__all__ = [
    "CAUSES",
    "DOCTOR_THRESHOLDS",
    "VERDICTS",
    "Cause",
    "Stage",
    "DoctorOptions",
    "DoctorReport",
]

CAUSES: dict[str, dict[str, str]] = {
    "nan_or_inf_inputs": {
        "meaning": "NaN/Inf in node features, edge features or targets",
        "fix": "Runbook Step 2B: no NaN values. Impute or drop the rows listed (gatrank "
               "check-data lists each one), or load with data.on_error: skip to drop them."},
    "empty_graphs": {
        "meaning": "graphs with no nodes or no edges",
        "fix": "Runbook Step 2B: graphs have nodes and edges. Drop the graphs listed, or add "
               "edges (e.g. self-loops) deliberately before loading."},
    "constant_targets": {
        "meaning": "targets (nearly) all equal, overall or within groups",
        "fix": "Runbook Step 2B: y values vary. Check the target column is the one you mean "
               "and was not filled with a default; with groups, each group needs different "
               "targets."},
    "no_valid_pairs": {
        "meaning": "batches with no pair outside tie_eps/margin_eps",
        "fix": "Runbook 'Loss is Zero': check target values vary, reduce loss.margin_eps or "
               "increase training.batch_size, check loss.tie_eps is not too large (1e-6 "
               "recommended); with groups, batches need two graphs of one group."},
    "uninformative_features": {
        "meaning": "graphs the model cannot tell apart (identical features or structure)",
        "fix": "Runbook Step 2C: graph embeddings need variation (std > 0.01). Give nodes "
               "features that differ between graphs (atom type, degree, charge...), and "
               "check the featurizer is not returning a constant."},
    "loss_detached": {
        "meaning": "the loss has no gradient path to the parameters",
        "fix": "Runbook 'Gradients are Zero': verify scores.requires_grad is True and "
               "assert loss.requires_grad; remove .detach(), .item(), .numpy() or "
               "torch.tensor(...) between the model output and the loss."},
    "loss_wrong_direction": {
        "meaning": "the loss prefers reversed orderings",
        "fix": "Runbook loss test test_perfect_vs_reversed_ordering: the loss must be lower "
               "for the right order. Use softplus(-(s_i - s_j)) for pairs with y_i > y_j and "
               "check the sign of the score difference and of the targets."},
    "frozen_parameters": {
        "meaning": "parameters that never receive gradients or are not being optimized",
        "fix": "Runbook 'Gradients are Zero' (model frozen): set requires_grad=True on the "
               "parameters listed, build the optimizer from model.parameters() after "
               "unfreezing, and make sure every layer is used in forward()."},
    "vanishing_gradients": {
        "meaning": "gradient norms ~0 while the loss is above its minimum",
        "fix": "Runbook 'Gradients are Zero': gradients must exceed 0.01. Keep "
               "loss.temperature near 1 (score gaps are divided by it), avoid saturating "
               "activations and very deep stacks without residuals; normalize the hidden "
               "layer before the score head's activation (a LayerNorm there), never the "
               "one-unit output."},
    "exploding_gradients": {
        "meaning": "gradient norms huge or non-finite; loss turns NaN",
        "fix": "Runbook 'Training Stabilizers': keep training.grad_clip at 1.0 and the "
               "LayerNorm in the score head, use the layers' default initialisation, scale "
               "input features to O(1), lower the learning rate."},
    "learning_rate_too_low": {
        "meaning": "gradients flow but the loss barely moves",
        "fix": "Runbook 'Score Std is Zero': increase the learning rate (1e-3 for training, "
               "5e-3 in the overfit test)."},
    "learning_rate_too_high": {
        "meaning": "loss oscillates or diverges",
        "fix": "Lower the learning rate to the runbook's 1e-3 (5e-3 for the overfit test) and "
               "keep training.grad_clip at 1.0."},
    "dead_activations": {
        "meaning": "units that are zero for every input (a dead ReLU score head)",
        "fix": "Runbook 'Model Changes': keep LayerNorm before the ReLU in the score head "
               "(model.head: layernorm); re-initialise the head; a lower learning rate keeps "
               "units from dying."},
    "oversmoothing": {
        "meaning": "node embeddings become indistinguishable with depth",
        "fix": "Runbook 'Check model architecture': use 2-3 GAT layers (model.num_layers) and "
               "residual connections (model.residual: true)."},
    "score_head_saturated": {
        "meaning": "a bounded output (sigmoid/tanh) stuck at its limits",
        "fix": "A ranking loss needs unbounded scores: drop the sigmoid/tanh on the output "
               "(model.head: layernorm), or scale its input down."},
    "over_regularized": {
        "meaning": "dropout / weight decay so strong the model cannot fit a small set",
        "fix": "Runbook 'Score Std is Zero': disable dropout temporarily (model.dropout: 0) "
               "and lower training.weight_decay (0 to 1e-4)."},
    "no_signal": {
        "meaning": "the model memorizes the training set but held-out ranking is at chance",
        "fix": "Runbook 'Pairwise Accuracy ~0.5': check each target belongs to its graph "
               "(ids, row order, joins), that the target is predictable from the graph, and "
               "compare with the baselines (gatrank eval shows the linear and, for "
               "molecules, the fingerprint baseline, fitted to convergence)."},
    "insufficient_capacity": {
        "meaning": "the model learns but plateaus below the criteria on a small set that "
                   "gatrank's GAT fits with the same loss and settings",
        "fix": "Runbook 'Pairwise Accuracy ~0.5': increase model capacity (width, depth, "
               "attention or message passing instead of plain pooling of node features), or "
               "start from gatrank's GATRanker (--model gat)."},
    "score_shape_mismatch": {
        "meaning": "scores not one per graph: one per batch (pooling without batch), one per "
                   "node (no readout), a [G]/[G, 1] broadcast in a loss",
        "fix": "Return one score per graph, [G] or [G, 1]: pool node outputs per graph with "
               "the batch vector (global_mean_pool(h, batch)), and in a loss make scores and "
               "targets the same shape (scores.view(-1), targets.view(-1)) before combining "
               "them."},
    "constant_output_layer": {
        "meaning": "a layer that maps every input to the same output (a normalization over a "
                   "size-1 dimension, a softmax over one unit), named by the signal trace",
        "fix": "Remove the layer the signal trace names or change what it normalizes over: "
               "LayerNorm/BatchNorm over one feature and softmax over one unit give every "
               "graph the same value; normalize the hidden layer before the last Linear "
               "instead, and return the last Linear's output as the score."},
    "bad_initialization": {
        "meaning": "constant or zero initial weights: identical units that stay identical",
        "fix": "Do not initialise weights to zeros or a constant: identical units get "
               "identical gradients and never become different. Keep PyTorch's default "
               "initialisation (reset_parameters()) or use nn.init.xavier_uniform_ / "
               "kaiming_uniform_ on the weights named; zeros are fine for biases only."},
    "unscaled_targets": {
        "meaning": "targets far from unit scale under a loss that is not scale-invariant",
        "fix": "Standardize the targets ((y - mean) / std, or log-transform concentrations "
               "such as IC50 to pIC50) before training; gatrank's pairwise loss depends on "
               "the targets' order only, but loss.tie_eps and loss.margin_eps are in target "
               "units."},
    "user_code_error": {
        "meaning": "the user's model or loss raised an exception",
        "fix": "Fix the line of your code the evidence names (the exception, the stage it "
               "happened in and your own frame are quoted) so that it runs on every batch "
               "(any number of graphs, any graph size), then run the doctor again."},
    "does_not_generalize": {
        "meaning": "the model fits its training graphs but held-out ranking is at chance, "
                   "while a baseline fitted to convergence (linear, or for molecules Morgan "
                   "fingerprints with ridge) ranks the same held-out graphs above chance",
        "fix": "Train on more graphs, keep dropout/weight decay from the recommended config, "
               "stop early on validation Spearman, or start from the baseline that generalizes."},
    "invalid_data": {
        "meaning": "manifest rows gatrank cannot load (missing files, bad SMILES, ...)",
        "fix": "Run gatrank check-data and fix each row it lists, or set data.on_error: skip."},
    "optimizer_not_stepping": {
        "meaning": "your loop never calls optimizer.step() (or the weights never move while "
                   "gradients flow)",
        "fix": "Call optimizer.step() after loss.backward() in every step; scheduler.step() "
               "does not update the weights."},
    "lr_schedule_collapse": {
        "meaning": "a learning-rate schedule drives the rate to ~0 before the model learns "
                   "(typically a scheduler meant per epoch stepped per batch)",
        "fix": "Step an epoch-based scheduler once per epoch, after the epoch's optimizer "
               "steps; only schedules sized in steps (OneCycleLR) are stepped per batch."},
    "gradients_accumulate": {
        "meaning": "gradients are never reset between optimizer steps (optimizer.zero_grad() "
                   "missing), so each step adds to all earlier ones",
        "fix": "Call optimizer.zero_grad() before loss.backward() in every step; to accumulate "
               "over k batches, divide the loss by k and step and zero every k batches."},
    "same_batch": {
        "meaning": "every step of the loop trains on the same graphs",
        "fix": "Iterate over the loader (`for batch in loader:`) instead of calling "
               "next(iter(loader)) in each step."},
    "targets_misaligned": {
        "meaning": "the targets the loss gets are not the batch's graphs' own y",
        "fix": "Use batch.y (the targets travel with their graphs through the loader); never "
               "index a separate target array by batch position."},
    "gradients_clipped_away": {
        "meaning": "the optimizer steps with gradients orders of magnitude smaller than "
                   "backward produced (clipping or scaling between them)",
        "fix": "Clip gradients at max_norm=1.0 (training.grad_clip), not far below; do not "
               "rescale .grad between backward() and optimizer.step()."},
}
"""Every cause id the doctor names: its meaning and the runbook's fix. The first 23 are
DESIGN.md's, in its order; ``does_not_generalize`` and ``invalid_data`` are added, and the six
read from a user's loop by :class:`gatrank.Monitor`
(:mod:`gatrank.doctor.loop_causes`)."""

DOCTOR_THRESHOLDS: dict[str, float] = {
    "dead_fraction": 0.95,          # score-head ReLU units dead for every probe graph
    "saturated_fraction": 0.9,      # bounded outputs within 0.1% of a bound
    "exploding_grad_norm": 1e3,     # gradient norm before any update
    "vanishing_grad_norm": THRESHOLDS["grad_norm"],  # the runbook's 0.01
    "near_ln2": 0.9,                # loss never below this x ln 2: no better than constant
    "flat_loss_drop": 0.01,         # relative loss drop below this: "not moving"
    "ranking_gain": RANKING_GAIN,   # pairwise accuracy gain in a plateau window: still learning
    "oversmoothing_mad_ratio": 0.1,  # MAD at the last GAT layer / largest MAD over layers
    "indistinguishable": 0.5,       # graphs whose pooled input features clash
    "without_pairs": 0.5,           # batches without a valid pair
    "nearly_constant_ties": 0.99,   # fraction of target pairs that are ties
    "frozen_fraction": 0.5,         # parameters (by count) that cannot learn
    "signal_p": 0.01,               # permutation p-value for held-out signal
    "chance_p": 0.05,               # at or above this p-value, held-out ranking is at chance
    "judge_train": 128,             # training graphs a held-out stage needs to judge a signal
    "judge_heldout": 64,            # and held-out graphs
    "lr_high": 0.1,                 # learning rates above this are suspect
    "lr_low": 1e-5,                 # and below this
    "heavy_dropout": 0.5,
    "heavy_weight_decay": 0.1,
    "strong": 0.85,                 # a cause this likely needs no ablation to confirm it
    "tolerable_fraction": 0.05,     # rows with problems the model survives, left out, at most
    "target_scale": 100.0,          # targets with |mean| or std above this: far from unit scale
    "target_scale_small": 0.1,      # and with std below this
}
"""Every threshold the doctor uses, beside the runbook's
(:data:`gatrank.checks.verdict.THRESHOLDS`)."""

VERDICTS = ("healthy", "bad_data", "broken_loss", "cannot_fit", "collapsed", "unstable",
            "no_generalization", "broken_loop", "still_learning")
"""``healthy``: fits the overfit subset and ranks held-out graphs above chance; ``bad_data`` /
``broken_loss``: stopped at the data or loss checks; ``collapsed``: scores (nearly) constant;
``unstable``: NaN/Inf during training; ``cannot_fit``: neither; ``no_generalization``: fits but
held-out ranking is at chance; ``broken_loop`` (a :class:`gatrank.Monitor`'s reading): the
loop's mechanics are wrong (:mod:`gatrank.doctor.loop_causes`), whatever its metrics say;
``still_learning``: not passed yet, but the ranking still improves when the run ends."""


@dataclass
class Cause:
    id: str
    evidence: str
    """The measurements that support this cause, with their values."""
    fix: str
    score: float
    """How likely, 0-1: 1 = certain (a definitive check), ~0.95 = an ablation fixed it,
    ~0.9 = a strong measurement, lower = suspected."""
    stage: str
    measured: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    """The fix applied and the overfit test re-run with it (:mod:`gatrank.doctor.verify`):
    ``status`` ``verified``, ``not_enough``, ``human``, ``consequence`` or ``not_applicable``,
    the fix, and the run's measurements; None when the fix was not tried (not a top cause, or
    ``--no-verify``)."""

    @property
    def verified(self) -> bool:
        return bool(self.verification) and self.verification["status"] == "verified"

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "evidence": self.evidence, "fix": self.fix,
             "score": round(self.score, 3), "stage": self.stage, "measured": self.measured}
        if self.verification is not None:
            d["verification"] = self.verification
        return d


@dataclass
class Stage:
    name: str
    status: str
    """``ok``, ``warning`` (worth a look, not a cause), ``failed`` (found a problem),
    ``passed``/``fits`` or ``skipped``."""
    summary: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary,
                "seconds": round(self.seconds, 2)}


@dataclass
class DoctorOptions:
    """Budgets of the doctor's runs (defaults: under a minute on 2 CPU cores)."""

    n: int = 32
    """Graphs in the overfit test (the runbook's 32)."""
    overfit_epochs: int = 500
    """Epoch budget of the overfit test and its ablations: the runbook's 500. A run stops once
    the criteria pass or its loss plateaus, so most take a few dozen epochs."""
    user_epochs: int = 60
    """Epoch budget of the run with the user's own settings on the same graphs."""
    stall_epochs: int = 30
    """Stop a failing run when over this many epochs neither its best loss moved 1% of the way
    to the loss's optimum nor its pairwise accuracy rose 0.01 (the overfit stage: only while a
    red flag stands; :func:`gatrank.doctor.symptoms.plateau`)."""
    heldout_train: int = 512
    """At most this many training graphs in the held-out stage (fewer when
    ``heldout_seconds`` does not allow them, never fewer than 64 where the split has them)."""
    heldout_seconds: float = 20.0
    """The held-out stage's time budget: as many training graphs as it allows at the speed the
    overfit run measured."""
    heldout_max: int = 256
    """At most this many held-out graphs are scored."""
    heldout_epochs: int = 40
    probe_graphs: int = 32
    """Graphs in the probe batch of :class:`~gatrank.checks.probes.ModelProbe`."""
    ablations: bool = True
    heldout: bool = True
    verify: bool = True
    """Re-run the overfit test with the fix of each of the top causes applied
    (:func:`gatrank.doctor.verify.verify_fixes`)."""
    num_threads: int | None = None
    """torch threads while diagnosing (restored after); None: ``training.cpu_threads`` of the
    config (default 1: small graphs run fastest on one thread)."""
    permutations: int = 500
    """Score shuffles in the held-out permutation test (p-values down to 1/(permutations+1))."""

    def __post_init__(self) -> None:
        for name in ("n", "overfit_epochs", "user_epochs", "heldout_train", "heldout_max",
                     "heldout_epochs", "probe_graphs", "permutations", "heldout_seconds"):
            value = getattr(self, name)
            least = 2 if name in ("n", "heldout_train", "heldout_max") else 1
            if name == "heldout_seconds":
                least = 0
            if value < least:
                raise ValueError(f"DoctorOptions.{name} = {value} is out of range: use at least "
                                 f"{least}" + (" (ranking needs pairs; the runbook's overfit test "
                                               "uses 32)" if name == "n" else ""))


@dataclass
class DoctorReport:
    verdict: str
    """One of :data:`VERDICTS`."""
    causes: list[Cause]
    """Most likely first; empty when healthy."""
    stages: list[Stage]
    notes: list[str] = field(default_factory=list)
    config_diff: list[dict[str, Any]] = field(default_factory=list)
    """The user's training settings beside the runbook's overfit settings."""
    runbook_verdict: dict[str, Any] | None = None
    """:meth:`gatrank.checks.verdict.Verdict.to_dict` of the overfit test."""
    setup: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    traces: dict[str, Any] = field(default_factory=dict)
    """Signal traces (:class:`~gatrank.doctor.trace.SignalTrace`) of the overfit graphs:
    ``init`` (before training) and ``end`` (after a failed overfit run); JSON key ``trace``."""
    config: dict[str, Any] = field(default_factory=dict)
    """The settings diagnosed (:meth:`gatrank.config.Config.to_dict`, an injected fault's
    included): what ``--write-fix`` applies a verified config fix to."""

    @property
    def verified_fixes(self) -> list[dict[str, Any]]:
        """``{"cause", **verification}`` of every cause whose fix was verified, first first."""
        return [{"cause": c.id, **c.verification} for c in self.causes if c.verified]

    @property
    def cause_ids(self) -> list[str]:
        return [c.id for c in self.causes]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"verdict", "causes": [{"id", "evidence", "fix", ...}], ...}``."""
        return {"verdict": self.verdict, "causes": [c.to_dict() for c in self.causes],
                "notes": self.notes, "config_diff": self.config_diff,
                "runbook_verdict": self.runbook_verdict,
                "stages": [s.to_dict() for s in self.stages], "setup": self.setup,
                "trace": {k: t.to_dict() for k, t in self.traces.items()},
                "config": self.config, "seconds": round(self.seconds, 2)}

    def __str__(self) -> str:
        return self.format_text()

    def _repr_html_(self) -> str:
        """The report as HTML in a notebook (:func:`gatrank.render.doctor_html`)."""
        return doctor_html(self.to_dict())

    def _repr_pretty_(self, p, cycle) -> None:
        """IPython's text form (a terminal, a text export): the report, not the fields."""
        p.text(self.format_text())

    def format_text(self) -> str:
        """The report for a terminal."""
        lines = [f"verdict: {self.verdict.upper()}  ({self.seconds:.1f} s)"]
        if self.causes:
            lines.append("causes, most likely first:")
            for k, c in enumerate(self.causes, 1):
                tag = _VERIFICATION_TAG.get((c.verification or {}).get("status", ""), "")
                lines += [f" {k}. {c.id}  (likelihood {c.score:.2f}, from the {c.stage} "
                          f"stage{tag})",
                          f"    evidence: {c.evidence}", f"    fix: {c.fix}"]
        elif self.verdict == "still_learning":
            lines.append("no cause: the run was still learning when it ended (see the notes)")
        elif self.verdict != "healthy" and self.notes:  # e.g. scores not one per graph
            lines.append("no cause id matched: see the notes below")
        else:
            lines.append("no cause of collapse found")
        lines.append("stages:")
        for s in self.stages:
            brief = ", ".join(f"{k}={_fmt(v)}" for k, v in s.summary.items()
                              if not isinstance(v, (dict, list)))
            lines.append(f"  {s.name:<14} {s.status:<8} {s.seconds:5.1f}s  {brief}")
        if self.config_diff:
            lines.append("your settings beside the runbook's overfit test:")
            for d in self.config_diff:
                lines.append(f"  {d['key']:<26} yours {_fmt(d['yours']):<10} "
                             f"runbook {_fmt(d['runbook'])}")
        lines += self._trace_lines()
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _trace_lines(self) -> list[str]:
        """The signal traces: a table each for a diagnosis that found a problem, one line for a
        healthy one."""
        names = {"init": "at initialisation", "end": "after the overfit run"}
        if self.verdict == "healthy":
            init = self.traces.get("init")
            if init is None or init.scores_std is None:
                return []
            return [f"signal trace at initialisation: score std {init.scores_std:.3g} across "
                    f"{init.num_graphs} graphs, no layer makes them constant"
                    if init.culprit is None else
                    f"signal trace at initialisation: {init.culprit.evidence}"]
        lines = []
        for key, trace in self.traces.items():
            lines.append(f"signal trace {names.get(key, key)} (std across "
                         f"{trace.num_graphs} graphs per module, in forward order):")
            lines += [f"  {line}" for line in trace.format_lines()]
        return lines


_VERIFICATION_TAG = {"verified": "; fix verified", "not_enough": "; fix tried, not enough alone",
                     "human": "; fix needs you", "consequence": "; follows from another cause",
                     "not_applicable": "; fix not tried"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
