"""Build the model zoo (zoo/): the entries' records, the derived entries, the cards and docs/zoo.md.

    python bench/zoo_build.py setup    # entry.json everywhere; CIFAR-10 and constructed entries as run folders
    python bench/zoo_build.py cards    # robustbench.json from each entry's eval-adaptive.json; docs/zoo.md

The MNIST entries are trained by bench/zoo_mnist.sh, the CIFAR-10 FGSM-RS, TRADES and L2 entries by
bench/zoo_cifar10.sh (each command lands in NAME/command.txt). The other CIFAR-10 entries reuse the
committed runs of bench/cifar10_cpu.sh (their files are linked, not copied); the constructed defenses link their base entry's weights and name the defense in run.json.
Each entry is evaluated with the adaptive suite (1,000 MNIST / 500 CIFAR-10 test images), e.g.

    robustopt eval zoo:NAME --suite adaptive --n 1000 --out zoo/NAME

and its card made from that evaluation (the commands are in each entry's provenance).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from robustopt import zoo  # noqa: E402
from robustopt.evaluation.card import robustbench_card  # noqa: E402
from robustopt.evaluation.evaluate import Evaluation  # noqa: E402
from robustopt.runs import CARD_NAME  # noqa: E402

ZOO = REPO / "zoo"
SUITE = "adaptive"
N = {"mnist": 1000, "cifar10": 500}
RUN_FILES = ("run.json", "config.json", "log.jsonl", "model.json", "model.safetensors")

# name -> record. Trained MNIST entries: their folder is their run. "run": a committed run whose files are
# linked. "base" + "defense": a constructed defense over the base entry's weights.
ENTRIES: dict[str, dict] = {
    "mnist-natural": dict(description="natural training (the undefended reference)"),
    "mnist-pgd-linf": dict(description="PGD adversarial training (Madry et al. 2018), 3 steps of 0.15, 3 epochs"),
    "mnist-trades-linf": dict(description="TRADES (Zhang et al. 2019), beta 6, 3 PGD steps of 0.15, 3 epochs"),
    "mnist-fgsm-rs-co": dict(description="FGSM-RS without the guard: catastrophic overfitting, a naturally masked model "
                                         "(first 1,000 test images: FGSM 76.4%, PGD-10 and PGD-40 0.0%)"),
    "mnist-n-fgsm-linf": dict(description="N-FGSM (de Jorge et al. 2022) with its guard: at full eps (epoch 2) "
                                          "validation PGD-10 fell from 38.1% to 10.0%, so the guard kept epoch 1 (eps 0.15)"),
    "mnist-pgd-l2": dict(description="PGD adversarial training under L2 eps 2.0"),
    "cifar10-n-fgsm-linf": dict(run="bench/results/cifar10-cpu/A", method="n-fgsm",
                                description="model A of the CIFAR-10 reproduction: N-FGSM, 15 epochs",
                                train="robustopt reproduce madry-cifar10 --budget cpu --only A "
                                      "--out bench/results/cifar10-cpu (made as the 15-epoch recipe run: "
                                      "bench/results/cifar10-cpu/LOG.md)",
                                evaluate="robustopt eval bench/results/cifar10-cpu/A --suite adaptive --n 1000"),
    "cifar10-n-fgsm-linf-seed1": dict(run="bench/results/cifar10-cpu/A_prime", method="n-fgsm",
                                      description="model A' of the CIFAR-10 reproduction: A's recipe (15 epochs), seed 1",
                                      train="robustopt reproduce madry-cifar10 --budget cpu --only \"A'\" "
                                            "--out bench/results/cifar10-cpu"),
    "cifar10-natural": dict(run="bench/results/cifar10-cpu/A_nat", method="natural",
                            description="model A_nat of the CIFAR-10 reproduction: natural training",
                            train="robustopt reproduce madry-cifar10 --budget cpu --only A_nat "
                                  "--out bench/results/cifar10-cpu"),
    "cifar10-fgsm-rs-linf": dict(description="FGSM-RS (Wong et al. 2020), step 1.25 eps, with the catastrophic-"
                                             "overfitting guard; 6 epochs of the budget-cpu recipe (bench/zoo_cifar10.sh)"),
    "cifar10-trades-linf": dict(description="TRADES (Zhang et al. 2019), beta 6, 2 KL steps of eps/2; 6 epochs of "
                                            "the budget-cpu recipe (bench/zoo_cifar10.sh)"),
    "cifar10-pgd-l2": dict(description="PGD adversarial training under L2 eps 0.5, 2 steps of eps/2; 6 epochs of "
                                       "the budget-cpu recipe (bench/zoo_cifar10.sh)"),
    "mnist-pgd-linf-quantized": dict(base="mnist-pgd-linf", defense={"kind": "quantize", "levels": 16},
                                     description="input quantization to 16 levels (zero gradients) over mnist-pgd-linf"),
    "mnist-natural-jpeg": dict(base="mnist-natural", defense={"kind": "jpeg", "quality_step": 0.1},
                               description="JPEG-like compression (shattered gradients) over mnist-natural"),
    "mnist-pgd-linf-saturated": dict(base="mnist-pgd-linf", defense={"kind": "saturate", "scale": 1000.0},
                                     description="logits x1000 (saturated softmax) over mnist-pgd-linf"),
    "mnist-pgd-linf-noise": dict(base="mnist-pgd-linf", defense={"kind": "noise", "sigma": 0.1},
                                 description="Gaussian input noise, std 0.1 (a randomized model) over mnist-pgd-linf; "
                                             "the noise on top of eps 0.3 leaves the radius the base holds (base at "
                                             "eps 0.4: 0.5% under PGD-40 on these 200 points)"),
    "mnist-pgd-linf-softmax": dict(base="mnist-pgd-linf", defense={"kind": "softmax"},
                                   description="probabilities instead of logits over mnist-pgd-linf"),
}


def _link(target: Path, link: Path) -> None:
    """A relative symbolic link ``link`` -> ``target`` (replacing an old one)."""
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def setup() -> None:
    """Write every entry.json; make the linked and constructed entries' run folders."""
    for name, spec in ENTRIES.items():
        folder = ZOO / name
        ready = REPO / spec["run"] if "run" in spec else ZOO / spec.get("base", name)
        if not (ready / "run.json").is_file():
            print(f"{name}: skipped, {ready.relative_to(REPO)} is not trained yet")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        record = {"name": name, "description": spec["description"], "provenance": {}}
        if "run" in spec:  # a committed run: link its files and its evaluation, if it has the suite's
            run = REPO / spec["run"]
            for file in RUN_FILES + (f"eval-{SUITE}.json", f"eval-{SUITE}.md"):
                if (run / file).is_file() and not (folder / file).is_file():
                    _link(run / file, folder / file)
            record |= {"method": spec["method"], "run": spec["run"]}
            record["provenance"]["train"] = spec["train"]
        elif "base" in spec:
            base = ZOO / spec["base"]
            info = json.loads((base / "run.json").read_text())
            (folder / "run.json").write_text(json.dumps({**info, "defense": spec["defense"]}, indent=2) + "\n")
            for file in ("model.json", "model.safetensors"):
                _link(base / file, folder / file)
            record |= {"method": info["method"], "base": spec["base"]}
            record["provenance"]["train"] = f"the weights of zoo:{spec['base']}; defense {json.dumps(spec['defense'])}"
        else:
            record["method"] = json.loads((folder / "run.json").read_text())["method"]
            record["provenance"]["train"] = (folder / "command.txt").read_text().strip()
        dataset = json.loads((folder / "run.json").read_text())["data"]
        n = 200 if spec.get("defense", {}).get("kind") == "noise" else N[dataset]  # EOT: 20 draws per gradient
        record["provenance"]["evaluate"] = spec.get(
            "evaluate", f"robustopt eval zoo:{name} --suite {SUITE} --n {n} --out zoo/{name}")
        (folder / zoo.ENTRY_FILE).write_text(json.dumps(record, indent=2) + "\n")
        print(f"{name}: {record['provenance']['train']}")


def cards() -> None:
    """robustbench.json for every evaluated entry; docs/zoo.md from the cards."""
    for name in ENTRIES:
        if name not in zoo.names(ZOO):
            print(f"{name}: not set up yet (python bench/zoo_build.py setup)")
            continue
        item = zoo.entry(name, ZOO)
        result = item.folder / f"eval-{SUITE}.json"
        if not result.is_file():
            print(f"{name}: not evaluated yet ({item.provenance['evaluate']})")
            continue
        card = robustbench_card(Evaluation.from_json(result), name=name, dataset=item.dataset,
                                architecture=item.network, test_size=10_000)
        card["robustopt"]["provenance"] = item.provenance
        card["robustopt"]["description"] = item.description
        (item.folder / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
        print(f"{name}: clean {card['clean_acc']}%, robust {card['autoattack_acc']}%")
    header = ("# Model zoo\n\n"
              "Generated from the entries' cards (`zoo/NAME/robustbench.json`) by `python bench/zoo_build.py cards`"
              " (the same table: `robustopt zoo list --markdown`). Robust accuracy is the adaptive suite's per-example"
              " worst case on the first test images (1,000 for MNIST, 500 or more for CIFAR-10); each entry's"
              " `entry.json` holds the commands that trained and evaluated it. Constructed entries wrap a trained"
              " entry's weights in a defense (`robustopt.models.defenses`): their robustness cannot exceed their"
              " base's, so a higher number there is gradient masking the evaluation did not see through.\n\n"
              "Load an entry with `ro.zoo.load(NAME)`; evaluate it with"
              " `robustopt eval zoo:NAME --suite adaptive --n 1000` (results go to the user cache, or `--out DIR`).\n\n")
    (REPO / "docs" / "zoo.md").write_text(header + zoo.leaderboard(ZOO))
    print("written: docs/zoo.md")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["setup", "cards"])
    {"setup": setup, "cards": cards}[parser.parse_args().step]()
