"""``python -m dfnas_pl`` - one LightningCLI for every stage.

The stage is chosen by the config: ``model.class_path`` (teacher training, synthesis, ...) and
``data.class_path``. Subcommands are Lightning's own: ``fit``, ``validate``, ``test``, ``predict``,
plus the commands in ``COMMANDS`` (the drivers in :mod:`dfnas_pl.drivers` and ``check <synthetic set>``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI

import dfnas_pl.strategies  # noqa: F401  (registers the "ddp_nosync" strategy name)
from dfnas_pl.quiet import quiet_library_noise
from dfnas_pl.wandb_setup import default_wandb_mode


class DFNASCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data, and rerun-safe config saving."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        # A resumed run writes its config.yaml again into the same log dir: overwrite, don't crash.
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"prog": "python -m dfnas_pl",
                                            "description": "dfnas_pl: data-free NAS with PyTorch Lightning. "
                                            "Run a stage with `fit --config experiments/<dataset>/<stage>.yaml`; "
                                            f"further commands (each with --help): {', '.join(COMMANDS)}."})
        super().__init__(*args, **kwargs)

    def _check_last_checkpoint(self) -> None:
        """``--ckpt_path last``: check the ``last.ckpt`` Lightning will pick from the checkpoint callbacks'
        folders (an explicit path was checked while parsing, in :meth:`_parse_ckpt_path`)."""
        from dfnas_pl.utils.checkpoints import check_checkpoint

        if self.config_init[self.subcommand].get("ckpt_path") != "last":
            return
        found = [Path(cb.dirpath) / "last.ckpt" for cb in self.trainer.checkpoint_callbacks
                 if getattr(cb, "dirpath", None) and (Path(cb.dirpath) / "last.ckpt").exists()]
        if found:
            check_checkpoint(found[0])

    def _no_anonymous_setting(self) -> None:
        """Lightning's WandbLogger always hands ``anonymous=None`` to ``wandb.init``, and wandb 0.31 warns that
        the setting "has no effect" whenever it is passed at all: drop the key when it says nothing (before
        the run starts, which happens on first use), so the warning, which no user can act on, never comes."""
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.trainer.loggers:
            init = getattr(logger, "_wandb_init", None) if isinstance(logger, WandbLogger) else None
            if init is not None and init.get("anonymous") is None:
                init.pop("anonymous", None)

    def _before_run(self) -> None:
        self._no_anonymous_setting()
        self._check_last_checkpoint()

    before_fit = before_validate = before_test = before_predict = _before_run

    def before_instantiate_classes(self) -> None:
        """No empty path anywhere in the config, before any stage, callback or logger is built."""
        from dfnas_pl.utils.settings import check_paths

        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        check_paths(config)
        logs_beside_outputs(config)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI opens an explicit ``--ckpt_path`` while parsing (for its hyper-parameters), before
        any ``before_<subcommand>`` hook: check that file first (names Lightning resolves are left to it;
        ``last`` is checked in the hooks, once the trainer knows its checkpoint folders)."""
        from dfnas_pl.utils.checkpoints import check_checkpoint

        subcommand = self.config.get("subcommand")
        given = self.config[subcommand].get("ckpt_path") if subcommand else None
        if given and given not in ("last", "best", "hpc", "registry"):
            check_checkpoint(given)
        super()._parse_ckpt_path()


def logs_beside_outputs(config) -> None:
    """A W&B logger whose ``save_dir`` names no place (WandbLogger's own default, the current directory)
    logs beside the stage's outputs: the model's ``output_dir`` where it has one, else the trainer's
    ``default_root_dir``. Otherwise every stage run on its own would write ``./wandb`` wherever it was
    started, whatever output directory the user gave it."""
    loggers = config.get("trainer", {}).get("logger")
    home = (config.get("model", {}).get("init_args", {}) or {}).get("output_dir") \
        or config.get("trainer", {}).get("default_root_dir")
    if not home or not loggers or isinstance(loggers, bool):
        return
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if str(logger.get("class_path", "")).endswith("WandbLogger") and logger.get("init_args") is not None \
                and str(logger.init_args.get("save_dir", ".")) in (".", "./", ""):
            logger.init_args.save_dir = str(home)


# Where our own clear error messages are raised (the package and the callbacks next to it).
OUR_CODE = (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "callbacks")
USER_ERRORS = (ValueError, OSError, RuntimeError)


def raised_by_us(err: BaseException) -> bool:
    """True when the innermost frame of the traceback is our code: the message is one we wrote for the
    user (naming the problem, the file and the fix), and the traceback would only bury it."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    where = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(where.is_relative_to(root) for root in OUR_CODE)


def our_error(err: BaseException) -> BaseException | None:
    """Our own error behind ``err``: ``err`` itself, or the one a library re-raised it as. jsonargparse
    instantiates a stage inside a Union check and re-raises what ``__init__`` raised as "Does not validate
    against any of the Union subtypes ... from <our error>", so the message we wrote is in the chain."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, USER_ERRORS) and raised_by_us(err):
            return err
        err = err.__cause__ or err.__context__
    return None


def main(args: list[str] | None = None):
    """Run a stage or a driver; our own errors print as one clear message (exit 2), without the
    traceback (``DFNAS_TRACEBACK=1`` shows it), also where a library re-raised them; anything else
    raised inside a library keeps its traceback."""
    try:
        return _dispatch(args)
    except USER_ERRORS as err:
        ours = our_error(err)
        if os.environ.get("DFNAS_TRACEBACK") or ours is None:
            raise
        print(f"dfnas_pl: error: {ours}\n(DFNAS_TRACEBACK=1 shows where it was raised.)", file=sys.stderr)
        raise SystemExit(2) from None


# The commands beside LightningCLI's subcommands: name -> the module whose ``main(argv)`` runs it. A new
# driver is a class whose constructor signature is its command line (``driver_from_args`` in
# dfnas_pl/drivers/commands.py builds one from it), a ``main`` and one line here (imported only when named,
# so ``fit`` stays lean).
COMMANDS = {
    "pipeline": "dfnas_pl.drivers.pipeline",            # all stages in order
    "paper-table": "dfnas_pl.drivers.paper_table",      # the paper's comparison of search-data sources
    "groundtruth": "dfnas_pl.drivers.groundtruth",      # real-data accuracy of fixed architectures
    "rank-fidelity": "dfnas_pl.drivers.rank_fidelity",  # how each data source's supernet ranks them
    "synthesis-sweep": "dfnas_pl.drivers.synthesis_sweep",  # distillation check over synthesis variants
    "check": "dfnas_pl.data.check_set",                 # verify a synthetic set
}


def _dispatch(args: list[str] | None = None):
    # 2-core CPU machines: keep torch from oversubscribing when several DDP processes share the cores.
    if "DFNAS_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["DFNAS_NUM_THREADS"]))
    default_wandb_mode()  # offline unless logged in (dfnas_pl.wandb_setup)
    quiet_library_noise()  # messages a user cannot act on (dfnas_pl.quiet)
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] and argv[0] in COMMANDS:  # a driver: its module's main() takes the rest of the line
        from importlib import import_module

        result = import_module(COMMANDS[argv[0]]).main(argv[1:])
        if isinstance(result, int):  # a command that answers with an exit status (check)
            raise SystemExit(result)
        return result
    return DFNASCLI(args=args)


if __name__ == "__main__":
    main()
