"""`python -m pex.workers`: the `pex worker` command on its own (what `pex serve` starts)."""

from pex.cli.workers import worker

if __name__ == "__main__":  # pragma: no cover
    worker(prog_name="pex worker")
