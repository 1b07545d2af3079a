"""Regenerate loans.csv and weights.pt (already committed; run this only to change them).

    python make_example.py

Writes 400 rows: income and debt decide the label ("approved" / "declined"), age and
tenure are noise; 300 rows are marked `train` and 100 `test` in the `split` column. The
model in mymodel.py is trained on the train rows in plain PyTorch and saved as a
state_dict: exactly what a user brings to the workbench."""

import csv

import numpy as np
import torch

from mymodel import LoanModel

rng = np.random.default_rng(0)
n = 400
income = rng.normal(52_000, 15_000, n).round(0)
debt = rng.normal(9_000, 4_000, n).round(0)
age = rng.integers(21, 70, n)
tenure = rng.integers(0, 30, n)
score = (income - 52_000) / 15_000 - 1.5 * (debt - 9_000) / 4_000 + rng.normal(0, 0.3, n)
label = np.where(score > 0, "approved", "declined")
split = np.array(["train"] * 300 + ["test"] * 100)

with open("loans.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["income", "debt", "age", "tenure", "label", "split"])
    for row in zip(income, debt, age, tenure, label, split):
        w.writerow([int(row[0]), int(row[1]), int(row[2]), int(row[3]), row[4], row[5]])

x = torch.tensor(np.stack([income, debt, age, tenure], 1), dtype=torch.float32)
y = torch.tensor((label == "declined").astype(np.int64))  # ids in sorted label order: approved 0, declined 1
train = torch.from_numpy(split == "train")
torch.manual_seed(0)
model = LoanModel()
model.mean.copy_(x[train].mean(0))
model.std.copy_(x[train].std(0))
opt = torch.optim.Adam(model.parameters(), lr=0.01)
for _ in range(300):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x[train]), y[train])
    loss.backward()
    opt.step()
model.eval()
with torch.no_grad():
    acc = (model(x[~train]).argmax(1) == y[~train]).float().mean().item()
print(f"test accuracy in plain PyTorch: {acc:.4f}")
torch.save(model.state_dict(), "weights.pt")
