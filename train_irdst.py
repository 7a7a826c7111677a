"""Train SSTNet on IRDST-layout data (spec §8 recipe by default). See `python train_irdst.py --help`.

Examples:
    python train_irdst.py                                    # bundled synthetic data, published recipe
    python train_irdst.py --data-root /data/IRDST --pretrained yolox_s.pth
    torchrun --nproc_per_node=2 train_irdst.py --data-root /data/IRDST --batch-size 8
"""
from utils.errors import run_cli
from utils.train_cli import IRDST, main

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, IRDST))
