"""The course's tensor lessons (P26, the S3 tutorial) and the tensor API catalogue
(S1) as PyTorch prints them: the golden text of `examples/tensor_lessons.rs`.

    /root/torchenv/bin/python tools/course/tensor_lessons.py > tests/fixtures/course/tensor_lessons.txt

Every item prints its expression, then PyTorch's `print` of the result. Only the
deterministic items are here: the example prints its random creators after this text,
under a heading of their own (aotgrad's generator is not PyTorch's).
"""
import torch

torch.set_num_threads(1)


def show(label, value):
    print(f">>> {label}")
    print(value)


print("== P26: the tensor lessons ==")
six = torch.ones(4, 3) * 6
two = torch.ones(3) * 2
show("torch.ones(4, 3) * 6 / (torch.ones(3) * 2)", six / two)
show("torch.ones(4, 3) * 6 @ (torch.ones(3) * 2)", six @ two)
x = torch.tensor([[1., 2., 3.], [4., 5., 6.]])
show("x", x)
show("x.sum(dim=0)", x.sum(dim=0))
show("x.sum(dim=1)", x.sum(dim=1))
show("x.std(dim=0)", x.std(dim=0))
show("x.std(dim=1)", x.std(dim=1))
show("x.mean(dim=0)", x.mean(dim=0))
show("x.mean(dim=1)", x.mean(dim=1))
show("x.view(3, 2)", x.view(3, 2))
show("x.view(-1)", x.view(-1))
show("torch.cat([x, x, x], 0).shape", torch.cat([x, x, x], 0).shape)
show("torch.cat([x, x, x], 1)", torch.cat([x, x, x], 1))
y = torch.arange(24.).view(2, 3, 4)
show("y[:, 0, 0]", y[:, 0, 0])
show("y[[0, 0, 1]].shape", y[[0, 0, 1]].shape)
show("y[0, 0, 0].item()", y[0, 0, 0].item())
a = torch.tensor([2.], requires_grad=True)
(3 * a ** 2).backward()
show("x = [2.], (3 * x**2).backward(): x.grad", a.grad)
b = torch.tensor([[1., 2.], [3., 4.]], requires_grad=True)
(b ** 2).backward(torch.ones(2, 2))
show("x = [[1, 2], [3, 4]], (x**2).backward(ones): x.grad", b.grad)

print("== S1: creation and dtypes ==")
show("torch.tensor([2., 3.2])", torch.tensor([2., 3.2]))
show("torch.full([], 7.)", torch.full([], 7.))
show("torch.full([2, 3], 7.)", torch.full([2, 3], 7.))
show("torch.eye(3, 4)", torch.eye(3, 4))
show("torch.arange(0, 10)", torch.arange(0, 10))
show("torch.arange(0, 10, 2)", torch.arange(0, 10, 2))
show("torch.linspace(0, 10, steps=4)", torch.linspace(0, 10, steps=4))
show("torch.linspace(0, 10, steps=11)", torch.linspace(0, 10, steps=11))
show("torch.zeros_like(x)", torch.zeros_like(x))
show("torch.empty(2, 3).shape", torch.empty(2, 3).shape)
f = torch.tensor([1.7, -2.5, 0.2])
show("f.long()", f.long())
show("f.long().float()", f.long().float())
show("f.double()", f.double())

print("== S1: indexing ==")
a = torch.arange(4 * 3 * 28 * 28.).view(4, 3, 28, 28)
show("a[0].shape", a[0].shape)
show("a[0, 0].shape", a[0, 0].shape)
show("a[0, 0, 2, 4]", a[0, 0, 2, 4])
show("a[:2].shape", a[:2].shape)
show("a[:2, :1, :, :].shape", a[:2, :1, :, :].shape)
show("a[:2, 1:, :, :].shape", a[:2, 1:, :, :].shape)
show("a[:2, -1:, :, :].shape", a[:2, -1:, :, :].shape)
show("a[:, :, 0:28:2, 0:28:2].shape", a[:, :, 0:28:2, 0:28:2].shape)
show("a[:, :, ::2, ::2].shape", a[:, :, ::2, ::2].shape)
show("a.index_select(0, torch.tensor([0, 2])).shape", a.index_select(0, torch.tensor([0, 2])).shape)
show("a.index_select(2, torch.arange(8)).shape", a.index_select(2, torch.arange(8)).shape)
show("a[...].shape", a[...].shape)
show("a[0, ...].shape", a[0, ...].shape)
show("a[:, 1, ...].shape", a[:, 1, ...].shape)
show("a[..., :2].shape", a[..., :2].shape)
m = torch.tensor([[0., 1., 2.], [3., 4., 5.]])
mask = m > 2
show("m", m)
show("m > 2", mask)
show("m[m > 2]", m[mask])
show("torch.masked_select(m, m > 2)", torch.masked_select(m, mask))
m[mask] = 0
show("m[m > 2] = 0; m", m)
src = torch.tensor([[4, 3, 5], [6, 7, 8]])
show("torch.take(src, torch.tensor([0, 2, 5]))", torch.take(src, torch.tensor([0, 2, 5])))
cond = torch.tensor([[0.6, 0.4], [0.3, 0.9]])
show("torch.where(cond > 0.5, torch.zeros(2, 2), torch.ones(2, 2))",
     torch.where(cond > 0.5, torch.zeros(2, 2), torch.ones(2, 2)))
prob = torch.tensor([[0.10, 0.50, 0.20, 0.90, 0.30, 0.00, 0.80, 0.70, 0.40, 0.60],
                     [0.90, 0.10, 0.80, 0.20, 0.70, 0.30, 0.60, 0.40, 0.50, 0.05],
                     [0.45, 0.50, 0.55, 0.52, 0.10, 0.20, 0.30, 0.40, 0.60, 0.70],
                     [0.00, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90]])
idx = prob.topk(dim=1, k=3).indices
label = torch.arange(10) + 100
show("idx = prob.topk(dim=1, k=3).indices", idx)
show("torch.gather(label.expand(4, 10), 1, idx)", torch.gather(label.expand(4, 10), 1, idx))

print("== S1: views, joins and splits ==")
show("a.view(4, 3 * 28 * 28).shape", a.view(4, 3 * 28 * 28).shape)
show("a.reshape(4 * 3, 28, 28).shape", a.reshape(4 * 3, 28, 28).shape)
show("a.view(-1, 28).shape", a.view(-1, 28).shape)
show("a.unsqueeze(0).shape", a.unsqueeze(0).shape)
show("a.unsqueeze(-1).shape", a.unsqueeze(-1).shape)
show("a.unsqueeze(4).shape", a.unsqueeze(4).shape)
show("a.unsqueeze(-4).shape", a.unsqueeze(-4).shape)
bias = torch.arange(32.).view(1, 32, 1, 1)
show("bias.squeeze().shape", bias.squeeze().shape)
show("bias.squeeze(0).shape", bias.squeeze(0).shape)
show("bias.squeeze(-1).shape", bias.squeeze(-1).shape)
show("bias.squeeze(1).shape", bias.squeeze(1).shape)
show("bias.expand(4, 32, 14, 14).shape", bias.expand(4, 32, 14, 14).shape)
show("bias.expand(-1, 32, -1, -1).shape", bias.expand(-1, 32, -1, -1).shape)
show("bias.repeat(4, 32, 1, 1).shape", bias.repeat(4, 32, 1, 1).shape)
show("bias.repeat(4, 1, 32, 32).shape", bias.repeat(4, 1, 32, 32).shape)
s = torch.arange(6.).view(2, 3)
show("s.t()", s.t())
show("s.repeat(2, 2)", s.repeat(2, 2))
a1 = a.transpose(1, 3).contiguous().view(4, 3 * 28 * 28).view(4, 28, 28, 3).transpose(1, 3)
show("a.transpose(1, 3).contiguous().view(4, 3*28*28).view(4, 28, 28, 3).transpose(1, 3) == a",
     torch.all(torch.eq(a, a1)))
show("a.permute(0, 2, 3, 1).shape", a.permute(0, 2, 3, 1).shape)
c1 = torch.arange(4 * 32 * 8.).view(4, 32, 8)
c2 = torch.arange(5 * 32 * 8.).view(5, 32, 8)
show("torch.cat([c1, c2], dim=0).shape", torch.cat([c1, c2], dim=0).shape)
show("torch.stack([c1, c1], dim=2).shape", torch.stack([c1, c1], dim=2).shape)
show("[t.shape for t in c1.split([1, 3], dim=0)]", [t.shape for t in c1.split([1, 3], dim=0)])
show("[t.shape for t in c1.split(3, dim=0)]", [t.shape for t in c1.split(3, dim=0)])
show("[t.shape for t in c1.chunk(2, dim=0)]", [t.shape for t in c1.chunk(2, dim=0)])

print("== S1: math ==")
pi = torch.tensor(3.14)
show("pi.floor(), pi.ceil(), pi.trunc(), pi.frac()", (pi.floor(), pi.ceil(), pi.trunc(), pi.frac()))
g = torch.tensor([[-3.2, 15.1], [8.0, 0.5]])
show("g.max(), g.min()", (g.max(), g.min()))
show("g.clamp(10)", g.clamp(10))
show("g.clamp(0, 10)", g.clamp(0, 10))
t3 = torch.full([2, 2], 3.)
show("t3.pow(2)", t3.pow(2))
show("(t3 ** 2).sqrt()", (t3 ** 2).sqrt())
show("(t3 ** 2).rsqrt()", (t3 ** 2).rsqrt())
show("torch.exp(torch.ones(2, 2))", torch.exp(torch.ones(2, 2)))
# Not log(exp(1)): exp(1) rounds to 2.7182817f, whose correctly rounded f32 log is
# 0.99999994 (aotgrad's, from libm); PyTorch's vectorised log returns 1.0 there.
show("torch.log(torch.tensor([1., 2., 10.]))", torch.log(torch.tensor([1., 2., 10.])))
show("torch.ones(3, 4) + torch.arange(4.)", torch.ones(3, 4) + torch.arange(4.))
show("torch.arange(3.).view(3, 1) * torch.arange(4.)", torch.arange(3.).view(3, 1) * torch.arange(4.))

print("== S1: statistics ==")
st = torch.arange(8.).view(2, 4)
show("st", st)
show("st.norm(1), st.norm(2)", (st.norm(1), st.norm(2)))
show("st.norm(1, dim=1)", st.norm(1, dim=1))
show("st.norm(2, dim=1)", st.norm(2, dim=1))
show("st.min(), st.max(), st.mean(), st.prod(), st.sum()", (st.min(), st.max(), st.mean(), st.prod(), st.sum()))
show("st.argmax(), st.argmin()", (st.argmax(), st.argmin()))
show("st.argmax(dim=1)", st.argmax(dim=1))
show("st.max(dim=1)", st.max(dim=1))
show("st.max(dim=1, keepdim=True)", st.max(dim=1, keepdim=True))
show("prob.topk(3, dim=1)", prob.topk(3, dim=1))
show("prob.topk(3, dim=1, largest=False)", prob.topk(3, dim=1, largest=False))
show("prob.kthvalue(8, dim=1)", prob.kthvalue(8, dim=1))
show("st.std(), st.var(dim=1)", (st.std(), st.var(dim=1)))

print("== S1: comparisons ==")
show("st > 3", st > 3)
show("torch.gt(st, 3)", torch.gt(st, 3))
show("st != 0", st != 0)
show("torch.eq(st, st)", torch.eq(st, st))
show("torch.equal(st, st)", torch.equal(st, st))
show("torch.ge(st, 7)", torch.ge(st, 7))
