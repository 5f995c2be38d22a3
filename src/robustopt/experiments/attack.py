"""``robustopt eval`` and ``robustopt sweep``: attack a run's model, write the results into its folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from robustopt.data import formats as data_formats
from robustopt._checks import check_eps, check_grid_size, check_input_shape
from robustopt._io import atomic_write_text
from robustopt._lock import hold
from robustopt.attacks import PGD, Attack
from robustopt.evaluation import Evaluation, SweepCurve, evaluate, suites, sweep
from robustopt.evaluation.evaluate import saved_progress
from robustopt.evaluation.progress import ProgressFileError
from robustopt.evaluation.records import budget_table
from robustopt.experiments._inputs import attack_setup, data_info, load_test_images, quiet
from robustopt.runs import adds_rows, load_run, refuse_replacement, relative, result_stem, saved_request
from robustopt.threat import Linf, ThreatModel, by_name, check_norm

__all__ = ["eval_run", "sweep_run"]


def eval_run(
    run: str | Path,
    *,
    suite: str = "madry",
    sources: dict[str, str | Path] | None = None,
    norm: type[ThreatModel] | None = None,
    eps: float | None = None,
    limit: int | None = None,
    max_restarts: int | None = None,
    mode: str | None = None,
    batch_size: int = 500,
    seed: int = 0,
    root: str | Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    restart: bool = False,
    device: str = "cpu",
    weights: str = "final",
    overwrite: bool = False,
) -> Evaluation:
    """Evaluate a run's model on its dataset's test split; write ``eval-SUITE.{json,md}`` into the run.

    The evaluation is resumable: its progress is saved after every batch in
    ``eval-SUITE.progress.json`` inside the run, an interrupted evaluation started
    again with the same arguments continues from there, and the file is deleted
    when the evaluation completes.

    Args:
        run: run folder made by ``train_run``.
        suite: a registered suite (``robustopt.evaluation.suites.names()``): "madry" (the paper's rows),
            "standard" (AutoAttack-grade: APGD-CE, APGD-T, FAB-T, Square), "fast", "adaptive" (the
            standard attacks scheduled by evidence; the budget per stage is printed too) or "rand".
        sources: transfer sources, table name -> run folder (suites with transfer rows: madry).
        norm / eps: threat model, a class such as ``ro.L2`` and its radius (default: the run's training
            threat; a norm other than the run's needs an eps).
        limit: evaluate the first N test images.
        max_restarts: cap on restarts.
        mode: "independent" or "cascade" (default: the suite's, independent for madry, cascade otherwise).
        batch_size / seed / root / echo / progress: as in ``evaluate`` and ``ro.data.load``.
        restart: discard the saved progress of an interrupted evaluation and start over.
        device: "cpu", "auto" (CUDA when available) or a torch device string.
        weights: "final" or "best" (see ``load_run``); the best epoch's results go to ``eval-SUITE-best.*``.
        overwrite: replace an ``eval-SUITE.json`` made with other parameters (threat, n, attacks and
            their restarts, sources, mode, seed, batch size); without it such a file is kept and
            FileExistsError is raised before anything runs. A file whose request this one only
            extends with more rows (more transfer sources, say) is kept and completed instead: its
            rows are not computed again.

    Raises:
        ValueError: an unknown suite, sources for a suite without transfer rows, or a bad threat model.
        TypeError: ``norm`` is not a threat-model class (a name: ``ro.threat.by_name(name)`` gives it).
        FileExistsError: the run holds another evaluation of this suite and ``overwrite`` is False.
        robustopt.runs.RunFolderBusyError: another process holds the run folder.
    """
    norm = None if norm is None else check_norm(norm)
    stem = result_stem("eval", suite, weights)
    with hold(run, "eval", create=False, result=stem):
        run, ctx, dev, model, info = attack_setup(run, weights, device)
        echo = echo if ctx.is_main else quiet
        entry = suites.get_suite(suite)
        threat, source_models = _eval_threat_and_sources(run, info, entry, norm, eps, sources, dev)
        x, y = load_test_images(info, limit, root, echo, stream=dev)  # a data SPEC is read batch by batch
        x, y = x.to(dev) if isinstance(x, torch.Tensor) else x, y.to(dev)
        probe = x[:32] if isinstance(x, torch.Tensor) else x.sample()  # detects a randomized model
        attacks = entry.build(suites.SuiteRequest(threat, data=info["data"], sources=source_models,
                                                  max_restarts=max_restarts, seed=seed, model=model, x=probe))
        if suite != "rand" and _is_rand_version(attacks):
            echo(f"The model is random (two forward passes on the same images differ): running the rand version "
                 f"of the suite instead of {suite} (APGD-CE and APGD-DLR, each gradient averaged over "
                 f"{suites.EOT_DRAWS} draws), each point judged over several draws.")
        mode = mode or entry.mode
        request = {"weights": weights, "threat": str(threat), "n": len(x), "mode": mode, "seed": seed,
                   "batch_size": batch_size, "attacks": [[a.name, a.steps, a.restarts, a.source] for a in attacks],
                   "sources": {k: relative(v, run) for k, v in (sources or {}).items()}}
        result = run / f"{stem}.json"
        # An evaluation this one only adds rows to (transfer rows to the white-box ones, say) is kept, not redone:
        # the result is the same, as each attack's random stream depends on its position only.
        prior, saved = None, saved_request(result)
        if adds_rows(request, saved):
            prior = Evaluation.from_json(result)
            echo(f"Keeping the {len(prior.rows) - 1} attack rows of {result} (same settings); "
                 f"running the {len(attacks) - len(prior.rows) + 1} new ones.")
        else:
            ctx.run_on_main(lambda: refuse_replacement(result, request, saved, overwrite=overwrite, what="evaluation"))
        progress_file = run / f"{stem}.progress.json"
        if restart and ctx.is_main:
            progress_file.unlink(missing_ok=True)
        data = x if isinstance(x, data_formats.Streamed) else (x, y)
        meta = {"run": str(run), "weights": weights, "data": info["data"],
                "sources": {k: str(v) for k, v in (sources or {}).items()}, "request": request}
        try:
            resumed = None if restart else ctx.run_on_main(lambda: saved_progress(
                progress_file, model, data, attacks, mode=mode, seed=seed, batch_size=batch_size))
            if resumed is not None:  # the file is known to be usable: now say so
                echo(f"Resuming the interrupted evaluation saved in {progress_file} at attack {resumed['attack'] + 1} "
                     f"of {len(attacks)} (`robustopt eval --restart` / restart=True starts over).")
            ev = evaluate(model, data, attacks, batch_size=batch_size, seed=seed, mode=mode, progress=progress,
                          meta=meta, progress_file=progress_file, start_from=prior)
        except ProgressFileError as err:  # the library's advice names its keyword; here, the flag
            raise ValueError(f"{err.problem} `robustopt eval --restart` (restart=True) discards it and starts over.") from err
        table = entry.paper(info["data"], threat)
        reference = table.reference() if table is not None else None
        budget = budget_table(ev)  # the budget per stage of a scheduled suite (adaptive); "" for the others
        echo(ev.table(reference=reference) + (f"\n{budget}" if budget else ""))
        if ctx.is_main:
            ev.to_json(result)
            md = ev.to_markdown(run / f"{stem}.md", reference=reference)
            if budget:
                atomic_write_text(md, md.read_text() + "\n" + budget_table(ev, "markdown"))
            echo(f"written: {result} and {md.name}")
        ctx.barrier()
        return ev


def _eval_threat_and_sources(run: Path, info: dict[str, Any], entry: suites.Suite, norm: type[ThreatModel] | None,
                             eps: float | None, sources: dict[str, str | Path] | None,
                             device: torch.device) -> tuple[ThreatModel, dict[str, nn.Module]]:
    """The threat model of ``eval_run`` and its transfer sources loaded on ``device``, each request checked."""
    trained = by_name(info["norm"])  # run.json names the norm
    if norm is not None and eps is None and norm is not trained:
        raise ValueError(f"--norm {norm.norm.lower()} is not the run's training norm ({info['norm']}), so its eps "
                         f"{info['eps']:g} is no radius for it: give one with --eps (eps=).")
    if sources and not entry.transfer:
        with_transfer = [name for name, s in suites.SUITES.items() if s.transfer]
        raise ValueError(f"--source runs transfer rows only in the {' and '.join(with_transfer)} suite "
                         f"(--suite {with_transfer[0]}); the {entry.name} suite has none. Drop --source, or "
                         f"evaluate the transfer rows with --suite {with_transfer[0]}.")
    threat = (norm or trained)(info["eps"] if eps is None else eps)
    shape = data_info(info).shape
    check_eps(threat, shape)  # before any other complaint
    source_models = {name: load_run(path)[0].to(device) for name, path in (sources or {}).items()}
    for name, source in source_models.items():  # a source for other images fails late and obscurely
        check_input_shape(f"transfer source {name} ({sources[name]}), a {source.config.name} model",
                          source.config.input_size, info["data"], shape)
    return threat, source_models


def _is_rand_version(attacks: list[Attack]) -> bool:
    """Whether a suite switched to its rand version (EOT) for a randomized model."""
    return bool(attacks) and attacks[0].name.endswith(f"EOT-{suites.EOT_DRAWS}")


def sweep_run(
    run: str | Path,
    *,
    norm: type[ThreatModel] = Linf,
    eps_values: list[float],
    steps: int = 40,
    limit: int | None = 1000,
    batch_size: int = 500,
    seed: int = 0,
    root: str | Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    device: str = "cpu",
    independent: bool = False,
    weights: str = "final",
    overwrite: bool = False,
) -> SweepCurve:
    """Robust accuracy of a run's model over ``eps_values`` (monotone cascade, PGD with ``steps``).

    ``norm`` is the threat-model class (``ro.Linf``, ``ro.L2``, ``ro.L1``). Writes ``sweep-NORM.json``,
    ``sweep-NORM.md`` and ``sweep-NORM.png``, NORM its name in lower case (with the training eps
    marked when the norm is the training norm). With ``independent=True``
    every eps attacks all clean-correct examples (the cascade's reference cost) and the files are
    ``sweep-NORM-independent.*``; with ``weights="best"`` (see ``load_run``) they end in ``-best``.
    A file made with other parameters (eps grid, steps, n, seed, batch size) is replaced only with
    ``overwrite=True``; otherwise FileExistsError is raised before anything runs. A ``norm`` that is
    no threat-model class (a name, say) raises TypeError.
    """
    name = check_norm(norm).norm.lower()
    stem = result_stem("sweep", f"{name}-independent" if independent else name, weights)
    with hold(run, "sweep", create=False, result=stem):
        run, ctx, dev, model, info = attack_setup(run, weights, device)
        echo = echo if ctx.is_main else quiet
        check_grid_size(len(eps_values))  # the request itself first, then its conflicts with files on disk
        if eps_values and all(isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) and e >= 0 for e in eps_values):
            check_eps(norm(max(eps_values)), data_info(info).shape)  # sweep() explains other values
        x, y = load_test_images(info, limit, root, echo)
        x, y = x.to(dev), y.to(dev)
        request = {"weights": weights, "norm": name, "eps": [float(e) for e in eps_values], "steps": steps,
                   "n": len(x), "seed": seed, "batch_size": batch_size}
        result = run / f"{stem}.json"
        ctx.run_on_main(lambda: refuse_replacement(result, request, saved_request(result), overwrite=overwrite,
                                                   what="sweep"))
        attack = lambda t: PGD(t, steps=steps, seed=seed)  # noqa: E731  (step 2.5 * eps / steps at every eps)
        curve = sweep(model, (x, y), norm, eps_values, attack=attack, batch_size=batch_size, seed=seed,
                      progress=progress, independent=independent,
                      meta={"run": str(run), "weights": weights, "data": info["data"], "request": request})
        echo(curve.table())
        if ctx.is_main:
            curve.to_json(result)
            atomic_write_text(run / f"{stem}.md", curve.table("markdown"))
            curve.plot(run / f"{stem}.png", train_eps=info["eps"] if by_name(info["norm"]) is norm else None)
            echo(f"written: {result}, {stem}.md and {stem}.png")
        ctx.barrier()
        return curve
