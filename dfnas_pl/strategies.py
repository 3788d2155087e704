"""DDP for modules that train no weights (model inversion).

Synthesis optimises images, not parameters: the teacher is frozen. PyTorch's
``DistributedDataParallel`` refuses such a module ("DistributedDataParallel is not needed when a
module doesn't have any parameter that requires a gradient") and would broadcast the teacher's
buffers on every forward. ``NoSyncDDPStrategy`` keeps everything else of Lightning's DDP - process
group across devices and nodes, distributed samplers, barriers, rank-zero logging - and leaves the
module unwrapped. Select it with ``trainer.strategy: ddp_nosync``.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry


class NoSyncDDPStrategy(DDPStrategy):
    strategy_name = "ddp_nosync"

    def configure_ddp(self) -> None:
        trainable = [n for n, p in self.lightning_module.named_parameters() if p.requires_grad]
        if trainable:
            raise RuntimeError(
                f"strategy 'ddp_nosync' does not synchronise gradients, but the module trains {len(trainable)} "
                f"parameters (e.g. '{trainable[0]}'). Use strategy: ddp for training weights.")
        # No DistributedDataParallel wrapper: nothing to all-reduce, nothing to broadcast.

    @classmethod
    def register_strategies(cls, strategy_registry) -> None:
        strategy_registry.register(cls.strategy_name, cls, description="DDP without gradient sync (frozen models)")


if NoSyncDDPStrategy.strategy_name not in StrategyRegistry:
    NoSyncDDPStrategy.register_strategies(StrategyRegistry)
