"""Layers, Module state, optimisers and the seed networks, against torch.nn / torch.optim."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastconv
from fastconv import _native, models, nn, optim
from fastconv.autograd import Tensor, functional as F


def torch_twin(layer, torch_layer):
    """Copy our parameters and buffers into the torch layer (float64)."""
    state = {k: torch.tensor(np.asarray(v, np.float64)) for k, v in layer.state_dict().items()}
    torch_layer.double().load_state_dict(state, strict=False)
    return torch_layer


LAYERS = [
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 9, 9)),
    (lambda: nn.Conv2d(4, 6, (3, 2), groups=2, bias=False), lambda: torch.nn.Conv2d(4, 6, (3, 2), groups=2, bias=False),
     (2, 4, 7, 7)),
    (lambda: nn.ConvTranspose2d(4, 2, 4, 2, 1), lambda: torch.nn.ConvTranspose2d(4, 2, 4, 2, 1), (2, 4, 5, 5)),
    (lambda: nn.Linear(7, 3), lambda: torch.nn.Linear(7, 3), (5, 7)),
    (lambda: nn.MaxPool2d(3, 2, 1), lambda: torch.nn.MaxPool2d(3, 2, 1), (2, 3, 8, 8)),
    (lambda: nn.AvgPool2d(2), lambda: torch.nn.AvgPool2d(2), (2, 3, 8, 8)),
    (lambda: nn.BatchNorm1d(5), lambda: torch.nn.BatchNorm1d(5), (8, 5)),
    (lambda: nn.BatchNorm2d(3), lambda: torch.nn.BatchNorm2d(3), (4, 3, 5, 5)),
    (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2), (3, 4)),
    (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid(), (3, 4)),
    (lambda: nn.Tanh(), lambda: torch.nn.Tanh(), (3, 4)),
    (lambda: nn.Flatten(), lambda: torch.nn.Flatten(), (2, 3, 4, 5)),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2)),
     lambda: torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(18, 2)), (2, 1, 5, 5)),
]


@pytest.mark.parametrize("make, make_torch, shape", LAYERS)
@pytest.mark.parametrize("training", [True, False])
def test_layer_matches_torch(make, make_torch, shape, training):
    rng = np.random.default_rng(0)
    layer, reference = make(), make_torch()
    ours_keys = set(layer.state_dict())
    theirs_keys = {k for k in reference.state_dict() if not k.endswith("num_batches_tracked")}
    assert ours_keys == theirs_keys
    for name, p in layer.named_parameters():
        assert p.shape == tuple(reference.state_dict()[name].shape), name
    for name, v in layer.state_dict().items():  # float64 for a tight comparison
        setattr_path(layer, name, np.asarray(v, np.float64) + rng.uniform(0, 0.5, v.shape))
    reference = torch_twin(layer, reference)
    layer.train(training)
    reference.train(training)

    x = rng.standard_normal(shape)
    tx = torch.tensor(x, requires_grad=True)
    ours_x = Tensor(x.copy(), requires_grad=True)
    out = layer(ours_x)
    t_out = reference(tx)
    np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    cot = rng.standard_normal(out.shape)
    out.backward(cot)
    t_out.backward(torch.from_numpy(cot))
    np.testing.assert_allclose(ours_x.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    t_params = dict(reference.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    for name, v in layer.state_dict().items():  # running statistics
        np.testing.assert_allclose(v, reference.state_dict()[name].numpy(), rtol=1e-10, err_msg=name)


def setattr_path(module, dotted, value):
    *path, leaf = dotted.split(".")
    for part in path:
        module = dict(module.named_children())[part]
    current = getattr(module, leaf)
    if isinstance(current, Tensor):
        current.data = value
    else:
        setattr(module, leaf, value)


@pytest.mark.parametrize("make, fan_in", [(lambda: nn.Conv2d(6, 8, 3, groups=2), 27),
                                           (lambda: nn.ConvTranspose2d(4, 6, 4), 96),
                                           (lambda: nn.Linear(50, 3), 50)])
def test_torch_default_init_bounds(make, fan_in):
    nn.init.manual_seed(0)
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    for p in (layer.weight, layer.bias):
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.9 * bound


def test_keras_defaults():
    model = models.mnist_cnn()
    conv = model[0]
    bound = math.sqrt(6 / (1 * 9 + 32 * 9))
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.9 * bound
    dense = model[9]
    assert np.abs(dense.weight.data).max() <= math.sqrt(6 / (576 + 64))
    assert all(not p.data.any() for name, p in model.named_parameters() if name.endswith("bias"))


def test_seed_makes_initialisation_repeatable():
    nn.init.manual_seed(3)
    a = models.mnist_cnn().state_dict()
    nn.init.manual_seed(3)
    b = models.mnist_cnn().state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_save_load_round_trip(tmp_path):
    model = models.generator()
    model[1].running_mean[:] = 3.0
    path = tmp_path / "g.npz"
    model.save(path)
    other = models.generator().load(path)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(v, v2)
    assert "1.running_mean" in other.state_dict()


def test_load_state_dict_checks_names_and_shapes():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(KeyError, match="missing"):
        model.load_state_dict({"0.weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="0.bias"):
        model.load_state_dict({"0.weight": np.zeros((2, 3)), "0.bias": np.zeros(3)})


def test_modes_and_requires_grad():
    model = models.discriminator()
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    x = Tensor(np.zeros((2, 1, 28, 28), np.float32))
    assert not model(x).requires_grad


def test_dropout_layer_is_identity_in_eval():
    layer = nn.Dropout(0.5).eval()
    x = Tensor(np.ones((4, 4), np.float32))
    assert layer(x) is x


# --------------------------------------------------------------------------- optimisers

def _run_optimiser(make_ours, make_torch, steps=5):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((4, 3))
    ours = Tensor(w0.copy(), requires_grad=True)
    theirs = torch.tensor(w0.copy(), requires_grad=True)
    opt, topt = make_ours([ours]), make_torch([theirs])
    for _ in range(steps):
        g = rng.standard_normal((4, 3))
        opt.zero_grad()
        topt.zero_grad()
        ours.grad = g.copy()
        theirs.grad = torch.tensor(g)
        opt.step()
        topt.step()
        np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_sgd_momentum_matches_torch():
    _run_optimiser(lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
                   lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01))
    _run_optimiser(lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1))


def test_adam_matches_torch():
    _run_optimiser(lambda p: optim.Adam(p, lr=1e-2, eps=1e-7), lambda p: torch.optim.Adam(p, lr=1e-2, eps=1e-7))
    _run_optimiser(lambda p: optim.Adam(p, lr=2e-4, betas=(0.5, 0.999)),
                   lambda p: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999)))


def test_adam_with_missing_gradients_and_replaced_arrays_matches_torch(rng):
    """Adam updates its parameters as one flat buffer; a parameter without a gradient is
    skipped (as torch skips it) and one whose array was replaced is still updated."""
    shapes = [(4, 3), (5,), (2, 2, 2)]
    ours = [Tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt, topt = optim.Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    for step in range(6):
        opt.zero_grad()
        topt.zero_grad()
        for i, (p, tp) in enumerate(zip(ours, theirs)):
            if step % 3 == 1 and i == 1:
                continue  # no gradient this step
            g = rng.standard_normal(p.data.shape)
            p.grad, tp.grad = g.copy(), torch.tensor(g)
        if step == 3:
            ours[2].data = ours[2].data.copy()  # e.g. load_state_dict assigning new arrays
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_optimiser_skips_parameters_without_gradient():
    p = Tensor(np.ones(3), requires_grad=True)
    optim.Adam([p]).step()
    np.testing.assert_array_equal(p.data, 1.0)


# --------------------------------------------------------------------------- the seed networks

def test_mnist_cnn_is_the_keras_model():
    model = models.mnist_cnn()
    # Keras' model.summary(): 320 + 18,496 + 36,928 + 36,928 + 650 parameters
    assert sum(p.data.size for p in model.parameters()) == 93_322
    assert model(Tensor(np.zeros((2, 1, 28, 28), np.float32))).shape == (2, 10)


def test_torch_twin_has_the_same_shapes():
    ours = [p.shape for p in models.mnist_cnn().parameters()]
    theirs = [tuple(p.shape) for p in models.torch_mnist_cnn().parameters()]
    assert ours == theirs


@pytest.mark.parametrize("make, in_shape, out_shape", [
    (models.denoise_net, (2, 1, 32, 32), (2, 1, 32, 32)),
    (models.inpaint_net, (2, 2, 32, 32), (2, 1, 32, 32)),
    (lambda: models.restoration_net(depth=5), (2, 1, 32, 32), (2, 1, 32, 32)),
    (models.deconv_net, (2, 1, 28, 28), (2, 1, 28, 28)),
    (models.generator, (2, 100), (2, 1, 28, 28)),
    (models.discriminator, (2, 1, 28, 28), (2, 1)),
])
def test_network_shapes(make, in_shape, out_shape):
    out = make()(Tensor(np.random.default_rng(0).standard_normal(in_shape, dtype=np.float32)))
    assert out.shape == out_shape and out.dtype == np.float32


def test_restoration_depth_is_checked():
    with pytest.raises(ValueError, match="depth"):
        models.restoration_net(depth=6)


def test_pool_then_relu_equals_relu_then_pool():
    """models.py builds Conv ReLU MaxPool as Conv MaxPool ReLU: same values and gradients."""
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    a, b = Tensor(x.copy(), requires_grad=True), Tensor(x.copy(), requires_grad=True)
    ya, yb = F.relu(F.max_pool2d(a, 2)), F.max_pool2d(F.relu(b), 2)
    np.testing.assert_array_equal(ya.data, yb.data)
    cot = np.random.default_rng(1).standard_normal(ya.shape)
    ya.backward(cot)
    yb.backward(cot)
    np.testing.assert_array_equal(a.grad, b.grad)


def test_mnist_cnn_trains_step_for_step_like_torch():
    """End to end: the classifier, its loss and Adam in float64 follow PyTorch's parameters."""
    nn.init.manual_seed(0)
    ours = models.mnist_cnn()
    for p in ours.parameters():
        p.data = p.data.astype(np.float64)
    theirs = models.torch_mnist_cnn().double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    opt = optim.Adam(ours.parameters(), eps=1e-7)
    topt = torch.optim.Adam(theirs.parameters(), eps=1e-7)
    rng = np.random.default_rng(0)
    for _ in range(4):
        x, y = rng.random((16, 1, 28, 28)), rng.integers(0, 10, 16)
        loss = F.cross_entropy(ours(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tloss = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        assert float(loss.data) == pytest.approx(tloss.item(), rel=1e-10)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours.state_dict()[name], p.detach().numpy(), rtol=1e-6, atol=1e-9, err_msg=name)


# --------------------------------------------------------------------------- native elementwise paths

needs_native = pytest.mark.skipif(not _native.available(np.zeros(1, np.float32)),
                                  reason="the C++ extension is not built (the NumPy paths are used)")


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_matches_torch_with_nan_and_infinities(native, dtype, rng, monkeypatch):
    """Both paths (C++ and NumPy): a NaN input gives NaN and passes its gradient, as torch's."""
    if not native:
        monkeypatch.setattr(_native, "available", lambda *arrays: False)
    x = rng.standard_normal(70_001).astype(dtype)  # above the serial threshold, odd length
    x[[3, 70_000]], x[5], x[7], x[9] = np.nan, np.inf, -np.inf, 0.0
    g = rng.standard_normal(x.shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.relu(tx)
    ty.backward(torch.tensor(g))
    t = Tensor(x, requires_grad=True)
    y = F.relu(t)
    y.backward(g)
    np.testing.assert_array_equal(y.data, ty.detach().numpy())
    np.testing.assert_array_equal(t.grad, tx.grad.numpy())


@needs_native
def test_native_adam_rounds_as_the_numpy_expression(monkeypatch):
    """The C++ update gives the NumPy expression's bits, at 1 and 2 threads."""
    def train(threads, native):
        fastconv.set_num_threads(threads)
        monkeypatch.setattr(_native, "available", real if native else (lambda *arrays: False))
        p = Tensor(np.random.default_rng(0).standard_normal(100_003).astype(np.float32), requires_grad=True)
        opt = optim.Adam([p], lr=1e-3, eps=1e-7)
        for g in np.random.default_rng(1).standard_normal((3, p.data.size)).astype(np.float32):
            p.grad = g
            opt.step()
        return p.data

    real, before = _native.available, fastconv.get_num_threads()
    try:
        expected = train(1, native=False)
        for threads in (1, 2):
            np.testing.assert_array_equal(train(threads, native=True), expected)
    finally:
        fastconv.set_num_threads(before)
