"""Loss, assignment and gradients work together: a tiny model overfits one fixed batch."""
import torch

from nets import Network, YOLOLoss
from nets.training import init_weights
from utils.boxes import cxcywh_to_xyxy, decode_outputs, pairwise_iou

SIZE, FRAMES, BATCH = 64, 3, 4


def fixed_batch():
    """Four noisy 3-frame clips, each with one 12×12 bright square moving 2 px/frame to the right."""
    generator = torch.Generator().manual_seed(1)
    clips = torch.randn(BATCH, 3, FRAMES, SIZE, SIZE, generator=generator) * 0.3
    targets = []
    for b in range(BATCH):
        cx, cy, side = 12 + 10 * b, 20 + 7 * b, 12
        for t in range(FRAMES):
            x = cx - 2 * (FRAMES - 1 - t)
            clips[b, :, t, cy - side // 2:cy + side // 2, x - side // 2:x + side // 2] += 2.0
        targets.append(torch.tensor([[cx, cy, side, side, 0.0]]))
    return clips, targets


def top_box_ious(model, clips, targets):
    model.eval()
    with torch.no_grad():
        decoded = decode_outputs(model(clips), (SIZE, SIZE))
    ious = []
    for b, target in enumerate(targets):
        scores = decoded[b, :, 4] * decoded[b, :, 5]
        best = decoded[b, scores.argmax(), :4] * SIZE
        ious.append(pairwise_iou(cxcywh_to_xyxy(best[None]), cxcywh_to_xyxy(target[:, :4])).item())
    return ious


def test_tiny_model_overfits_one_batch():
    """Measured here: every sample's top box reaches IoU >= 0.5 after 100-125 AdamW steps (about 15 s);
    the test allows 300."""
    torch.manual_seed(0)
    clips, targets = fixed_batch()
    model = Network(1, FRAMES, "nano", lstm_hidden=8)
    init_weights(model)
    model.head.initialize_biases(0.01)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = YOLOLoss(1)
    assert min(top_box_ious(model, clips, targets)) < 0.5  # not solved before training
    for step in range(1, 301):
        model.train()
        optimizer.zero_grad()
        outputs, motion_loss = model(clips)
        (loss_fn(outputs, targets) + motion_loss).backward()
        optimizer.step()
        if step % 25 == 0 and min(top_box_ious(model, clips, targets)) >= 0.5:
            break
    ious = top_box_ious(model, clips, targets)
    assert min(ious) >= 0.5, f"after {step} steps the top boxes reach IoU {ious}"
