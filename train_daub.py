"""Train SSTNet on DAUB-layout data (the published recipe by default, docs/design.md). See `python train_daub.py
--help`.

Examples:
    python train_daub.py                                    # bundled synthetic data, published recipe
    python train_daub.py --data-root /data/DAUB --pretrained yolox_s.pth
    torchrun --nproc_per_node=2 train_daub.py --data-root /data/DAUB --batch-size 8
"""
from utils.data.bundled import DAUB
from utils.runtime.entry import run_cli
from utils.train.options import main

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, DAUB))
