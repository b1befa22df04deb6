"""Command-line helpers shared by the scripts."""

from __future__ import annotations

from afl.config import experiments


def usage(script: str) -> str:
    return (
        f"usage: python {script} [experiment=NAME] [key=value ...] [--show-config]\n\n"
        f"experiments: {', '.join(experiments())}\n"
        "keys: see configs/defaults.yaml (every key, with its default and meaning) and the README.\n"
        "examples:\n"
        f"  python {script} experiment=demo\n"
        f"  python {script} experiment=fmnist server.aggregator.name=fedbuff federation.concurrency=8\n"
        "  --show-config prints the resolved config and exits."
    )
