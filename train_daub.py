"""Train SSTNet on DAUB-layout data (spec §8 recipe by default). See `python train_daub.py --help`.

Examples:
    python train_daub.py                                    # bundled synthetic data, published recipe
    python train_daub.py --data-root /data/DAUB --pretrained yolox_s.pth
    torchrun --nproc_per_node=2 train_daub.py --data-root /data/DAUB --batch-size 8
"""
from utils.errors import run_cli
from utils.train_cli import DAUB, main

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, DAUB))
