# d2l-en commit 78c39a6cff4ff5a0905f3520053beea02f3ac5ce, chapter_multilayer-perceptrons/mlp-concise.md: its PyTorch cells, unchanged.
# Written by tests/d2l_book/extract.py (do not edit by hand; rerun it instead).

# %%
from d2l import torch as d2l
import torch
from torch import nn

# %%
net = nn.Sequential(nn.Flatten(),
                    nn.Linear(784, 256),
                    nn.ReLU(),
                    nn.Linear(256, 10))

def init_weights(m):
    if type(m) == nn.Linear:
        torch.nn.init.normal_(m.weight, std=0.01)

net.apply(init_weights)

# %%
batch_size, lr, num_epochs = 256, 0.1, 10
loss = nn.CrossEntropyLoss()
trainer = torch.optim.SGD(net.parameters(), lr=lr)

# %%
train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size)
d2l.train_ch3(net, train_iter, test_iter, loss, num_epochs, trainer)
