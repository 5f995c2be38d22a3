"""``python -m robustopt`` (and ``torchrun --nproc_per_node=N -m robustopt ...``): the ``robustopt`` command."""

from robustopt.cli import main

if __name__ == "__main__":
    main(prog_name="robustopt")
