"""Train SSTNet on IRDST-layout data (the published recipe by default, docs/design.md). See `python train_irdst.py
--help`.

Examples:
    python train_irdst.py                                    # bundled synthetic data, published recipe
    python train_irdst.py --data-root /data/IRDST --pretrained yolox_s.pth
    torchrun --nproc_per_node=2 train_irdst.py --data-root /data/IRDST --batch-size 8
"""
from utils.data.bundled import IRDST
from utils.runtime.entry import run_cli
from utils.train.options import main

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, IRDST))
