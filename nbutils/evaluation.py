"""Task 5: what the trained model gets right and wrong on the test set."""
from __future__ import annotations

import torch

from .data import CLASS_NAMES, get_fashion_mnist_labels
from .plotting import show_images
from .train import History, _model_device

__all__ = ["confusion_matrix", "misclassified", "per_class_accuracy", "predict", "predict_ch3",
           "report_lines"]


def predict(net, data_iter, device=None):
    """``(images, labels, predictions)`` over ``data_iter`` (eval mode, no grad), on the CPU."""
    device = _model_device(net, device)
    was_training = net.training
    net.eval()
    xs, ys, ps = [], [], []
    with torch.no_grad():
        for X, y in data_iter:
            ps.append(net(X.to(device)).argmax(dim=1).cpu())
            xs.append(X.cpu())
            ys.append(y.cpu())
    net.train(was_training)
    return torch.cat(xs), torch.cat(ys), torch.cat(ps)


def confusion_matrix(labels, predictions, num_classes=len(CLASS_NAMES)):
    """Counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def per_class_accuracy(cm):
    """{class name: accuracy} from a confusion matrix."""
    totals = cm.sum(dim=1).clamp(min=1)
    return {name: float(cm[i, i]) / float(totals[i]) for i, name in enumerate(CLASS_NAMES)}


def misclassified(images, labels, predictions, n=18):
    """The first ``n`` wrong predictions as ``(images, "true → predicted" titles)``."""
    wrong = (labels != predictions).nonzero().flatten()[:n]
    titles = [f"{t}\n→ {p}" for t, p in zip(get_fashion_mnist_labels(labels[wrong]),
                                             get_fashion_mnist_labels(predictions[wrong]))]
    return images[wrong], titles


def predict_ch3(net, test_iter, n=6, device=None):
    """Show ``n`` test images with their true and predicted labels (my_utils)."""
    X, y = next(iter(test_iter))
    device = _model_device(net, device)
    net.eval()
    with torch.no_grad():
        preds = net(X.to(device)).argmax(dim=1).cpu()
    titles = [f"{t}\n{p}" for t, p in zip(get_fashion_mnist_labels(y), get_fashion_mnist_labels(preds))]
    return show_images(X[:n].reshape(n, 28, 28), 1, n, titles=titles[:n])


def report_lines(history):
    """The report's two closing sentences, from a run's history."""
    best = History(history).best()
    return (f"The maximum test accuracy is {100 * best['test_acc']:.2f} % achieved at epoch "
            f"{best['epoch']}",
            f"The final test accuracy is {100 * history[-1]['test_acc']:.2f} %")
