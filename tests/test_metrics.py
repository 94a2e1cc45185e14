import numpy as np

from promptseg_cli.evaluation.metrics import Counts, iou_matrix


def test_perfect_prediction_scores_one():
    truth = np.zeros((20, 20), int)
    truth[2:6, 2:6] = 1
    truth[10:15, 10:15] = 2
    c = Counts()
    c.add(truth, truth * 7)  # ids need not match
    s = c.summary()
    assert s["ap@0.9"] == 1.0 and s["f1@0.5"] == 1.0 and s["pq@0.5"] == 1.0


def test_known_partial_scores():
    truth = np.zeros((20, 40), int)
    truth[0:10, 0:10] = 1  # matched with IoU 0.8
    truth[0:10, 20:30] = 2  # missed
    pred = np.zeros_like(truth)
    pred[0:10, 0:8] = 1  # IoU 80/100 = 0.8
    pred[15:20, 35:40] = 2  # false positive
    assert np.isclose(iou_matrix(truth, pred)[0, 0], 0.8)
    s = Counts()
    s.add(truth, pred)
    out = s.summary()
    # IoU 0.8 is not > 0.8: a TP up to 0.7, none from 0.8
    assert out["ap@0.5"] == round(1 / 3, 4) and out["ap@0.7"] == round(1 / 3, 4) and out["ap@0.8"] == 0.0
    assert out["f1@0.5"] == 0.5
    assert out["pq@0.5"] == round(0.8 / (1 + 0.5 + 0.5), 4)
    assert out["n_true"] == 2 and out["n_pred"] == 2


def test_counts_accumulate_over_images():
    truth = np.zeros((10, 10), int)
    truth[:5, :5] = 1
    c = Counts()
    c.add(truth, truth)
    c.add(truth, np.zeros_like(truth))
    assert c.summary()["ap@0.5"] == 0.5
