"""An independent numpy reference for every layer kind and for graphs of them, forward and
backward, float64, plainly.

It shares no code with netc's generator (only the IR dataclasses, to read a net): convolutions
expand groups and connection tables into a dense weight and slide the kernel one tap at a time,
pooling walks its windows one by one. Tensors are NCHW numpy arrays; a vector is (N, n, 1, 1).
Parameter names and layouts follow netc's: "<label>.weight" / "<label>.bias", conv [out,
in/groups, kh, kw], connection-table conv [connections, kh, kw] (output-major, inputs ascending),
fc [out, in], subsample and batchnorm [C], buffers "<label>.running_mean" / "<label>.running_var".
"""
from __future__ import annotations

import numpy as np

from netc import ir


def as_nchw(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape((-1, *shape))


# ---------------------------------------------------------------------------------------------
# convolution: y[n, o] = b[o] + sum_{c, i, j} W[o, c, i, j] * xpad[n, c, s*h + i, s*w + j]

def dense_weight(w: np.ndarray, in_channels: int, groups: int = 1,
                 table: ir.Table | None = None) -> np.ndarray:
    """The [out, in, kh, kw] weight a grouped or table conv is equivalent to (zeros elsewhere)."""
    if table is not None:
        out = np.zeros((table.out_channels, in_channels, *w.shape[1:]))
        k = 0
        for o in range(table.out_channels):
            for i in table.inputs_of(o):
                out[o, i] = w[k]
                k += 1
        assert k == w.shape[0], "table weight has the wrong number of connections"
        return out
    outs, per_group = w.shape[0], w.shape[1]
    assert per_group * groups == in_channels
    out = np.zeros((outs, in_channels, *w.shape[2:]))
    for o in range(outs):
        g = o // (outs // groups)
        out[o, g * per_group:(g + 1) * per_group] = w[o]
    return out


def sparse_weight(dense: np.ndarray, groups: int = 1, table: ir.Table | None = None) -> np.ndarray:
    """The inverse of dense_weight: pick the connected entries back out (for weight gradients)."""
    if table is not None:
        return np.stack([dense[o, i] for o in range(table.out_channels)
                         for i in table.inputs_of(o)])
    outs, per_group = dense.shape[0], dense.shape[1] // groups
    return np.stack([dense[o, (o // (outs // groups)) * per_group:][:per_group]
                     for o in range(outs)])


def _pad(x: np.ndarray, pad, value: float = 0.0) -> np.ndarray:
    (ph, pw) = pad
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def conv_forward(x, w, b, stride=(1, 1), pad=(0, 0)):
    """x (N, C, H, W), dense w (O, C, kh, kw), b (O,) or None -> (N, O, OH, OW)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw) = stride
    oh, ow = _out_size(h, kh, sh, pad[0]), _out_size(wd, kw, sw, pad[1])
    xp = _pad(x, pad)
    y = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_backward(dy, x, w, stride=(1, 1), pad=(0, 0)):
    """-> (dx, dense dw, db): the sums of the forward's products, tap by tap (col2im by hand)."""
    _, _, kh, kw = w.shape
    (sh, sw) = stride
    _, _, oh, ow = dy.shape
    xp = _pad(x, pad)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            rows, cols = slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw)
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dy, xp[:, :, rows, cols])
            dxp[:, :, rows, cols] += np.einsum("nohw,oc->nchw", dy, w[:, :, i, j])
    dx = dxp[:, :, pad[0]:pad[0] + x.shape[2], pad[1]:pad[1] + x.shape[3]]
    return dx, dw, dy.sum(axis=(0, 2, 3))


# ---------------------------------------------------------------------------------------------
# pooling, window by window

def _windows(x, kernel, stride, pad):
    """Yield (oh, ow, rows, cols) for every window in padded coordinates."""
    (kh, kw), (sh, sw) = kernel, stride
    oh = _out_size(x.shape[2], kh, sh, pad[0])
    ow = _out_size(x.shape[3], kw, sw, pad[1])
    for r in range(oh):
        for c in range(ow):
            yield r, c, slice(r * sh, r * sh + kh), slice(c * sw, c * sw + kw)


def pool_out_shape(x, kernel, stride, pad):
    return (*x.shape[:2], _out_size(x.shape[2], kernel[0], stride[0], pad[0]),
            _out_size(x.shape[3], kernel[1], stride[1], pad[1]))


def maxpool_forward(x, kernel, stride, pad=(0, 0)):
    """Padding never wins: it is -inf."""
    xp = _pad(x, pad, -np.inf)
    y = np.zeros(pool_out_shape(x, kernel, stride, pad))
    for r, c, rows, cols in _windows(x, kernel, stride, pad):
        y[:, :, r, c] = xp[:, :, rows, cols].max(axis=(2, 3))
    return y


def maxpool_backward(dy, x, kernel, stride, pad=(0, 0)):
    """Each output's gradient goes to its window's arg-max (the first, in row-major order on a
    tie); an input that is the max of several overlapping windows receives the sum."""
    xp = _pad(x, pad, -np.inf)
    dxp = np.zeros_like(xp)
    kw = kernel[1]
    for r, c, rows, cols in _windows(x, kernel, stride, pad):
        win = xp[:, :, rows, cols]
        flat = win.reshape(*win.shape[:2], -1).argmax(axis=2)
        for n in range(x.shape[0]):
            for ch in range(x.shape[1]):
                i, j = divmod(int(flat[n, ch]), kw)
                dxp[n, ch, rows.start + i, cols.start + j] += dy[n, ch, r, c]
    return dxp[:, :, pad[0]:pad[0] + x.shape[2], pad[1]:pad[1] + x.shape[3]]


def avgpool_forward(x, kernel, stride, pad=(0, 0)):
    """Divides by the full window, padding included."""
    xp = _pad(x, pad)
    y = np.zeros(pool_out_shape(x, kernel, stride, pad))
    for r, c, rows, cols in _windows(x, kernel, stride, pad):
        y[:, :, r, c] = xp[:, :, rows, cols].sum(axis=(2, 3)) / (kernel[0] * kernel[1])
    return y


def avgpool_backward(dy, x, kernel, stride, pad=(0, 0)):
    dxp = np.zeros_like(_pad(x, pad))
    for r, c, rows, cols in _windows(x, kernel, stride, pad):
        dxp[:, :, rows, cols] += dy[:, :, r, c][:, :, None, None] / (kernel[0] * kernel[1])
    return dxp[:, :, pad[0]:pad[0] + x.shape[2], pad[1]:pad[1] + x.shape[3]]


def subsample_forward(x, coef, bias, kernel, stride):
    """LeNet-1998's S layer before its activation: coef[c] * window average + bias[c]."""
    return coef[None, :, None, None] * avgpool_forward(x, kernel, stride) \
        + bias[None, :, None, None]


def subsample_backward(dy, x, coef, kernel, stride):
    """-> (dx, dcoef, dbias)."""
    avg = avgpool_forward(x, kernel, stride)
    dx = avgpool_backward(dy * coef[None, :, None, None], x, kernel, stride)
    return dx, (dy * avg).sum(axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))


def global_avgpool_forward(x):
    return x.mean(axis=(2, 3), keepdims=True)


def global_avgpool_backward(dy, x):
    return np.broadcast_to(dy, x.shape) / (x.shape[2] * x.shape[3])


# ---------------------------------------------------------------------------------------------
# fully connected over the flattened input: y = x W^T + b

def fc_forward(x, w, b):
    y = x.reshape(x.shape[0], -1) @ w.T
    if b is not None:
        y = y + b
    return y.reshape(x.shape[0], -1, 1, 1)


def fc_backward(dy, x, w):
    """-> (dx, dw, db)."""
    dy2 = dy.reshape(dy.shape[0], -1)
    x2 = x.reshape(x.shape[0], -1)
    return (dy2 @ w).reshape(x.shape), dy2.T @ x2, dy2.sum(axis=0)


# ---------------------------------------------------------------------------------------------
# elementwise activations, differentiated from their input

def act_forward(x, fn: ir.Activation):
    match fn.kind:
        case "relu":
            return np.maximum(x, 0.0)
        case "sigmoid":
            return 1.0 / (1.0 + np.exp(-fn.a * x))
        case "tanh":
            return fn.a * np.tanh(fn.b * x)
    raise NotImplementedError(fn.kind)


def act_backward(dy, x, fn: ir.Activation):
    match fn.kind:
        case "relu":
            return dy * (x > 0)
        case "sigmoid":
            s = 1.0 / (1.0 + np.exp(-fn.a * x))
            return dy * fn.a * s * (1.0 - s)
        case "tanh":
            return dy * fn.a * fn.b / np.cosh(fn.b * x) ** 2
    raise NotImplementedError(fn.kind)


# ---------------------------------------------------------------------------------------------
# softmax over the features of each sample, and the losses

def softmax_forward(x):
    z = x.reshape(x.shape[0], -1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(x.shape)


def softmax_backward(dy, p):
    """Jacobian-vector product of softmax from its output p: p * (dy - <dy, p>)."""
    dy2, p2 = dy.reshape(dy.shape[0], -1), p.reshape(p.shape[0], -1)
    return (p2 * (dy2 - (dy2 * p2).sum(axis=1, keepdims=True))).reshape(p.shape)


def cross_entropy(logits, y):
    """Mean over the batch of -log softmax(logits)[y], from logits (log-sum-exp, stable)."""
    z = logits.reshape(logits.shape[0], -1)
    m = z.max(axis=1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def softmax_cross_entropy_backward(p, y):
    """d loss / d logits = (softmax - onehot) / N."""
    d = p.reshape(p.shape[0], -1).copy()
    d[np.arange(len(y)), y] -= 1.0
    return (d / len(y)).reshape(p.shape)


def mse(out, t):
    """Mean over the batch of ½‖out − t‖²."""
    diff = out.reshape(out.shape[0], -1) - t.reshape(out.shape[0], -1)
    return 0.5 * (diff ** 2).sum() / out.shape[0]


def mse_backward(out, t):
    return (out - t.reshape(out.shape)) / out.shape[0]


# ---------------------------------------------------------------------------------------------
# dropout (inverted) given its keep mask, batch normalisation

def dropout_forward(x, mask, p):
    return x * mask / (1.0 - p)


def dropout_backward(dy, mask, p):
    return dy * mask / (1.0 - p)


def batchnorm_forward_train(x, gamma, beta, eps):
    """Normalise with the batch's per-channel mean and biased variance over (N, H, W).
    -> (y, cache); cache holds what backward needs and the batch statistics."""
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    xhat = (x - mean[None, :, None, None]) / np.sqrt(var + eps)[None, :, None, None]
    y = gamma[None, :, None, None] * xhat + beta[None, :, None, None]
    return y, (xhat, var, eps, mean)


def batchnorm_backward_train(dy, gamma, cache):
    """-> (dx, dgamma, dbeta), the batch statistics differentiated too."""
    xhat, var, eps, _ = cache
    m = dy.shape[0] * dy.shape[2] * dy.shape[3]
    dgamma = (dy * xhat).sum(axis=(0, 2, 3))
    dbeta = dy.sum(axis=(0, 2, 3))
    dxhat = dy * gamma[None, :, None, None]
    dx = (dxhat - dxhat.sum(axis=(0, 2, 3))[None, :, None, None] / m
          - xhat * (dxhat * xhat).sum(axis=(0, 2, 3))[None, :, None, None] / m)
    return dx / np.sqrt(var + eps)[None, :, None, None], dgamma, dbeta


def batchnorm_update_running(running_mean, running_var, cache, count, momentum):
    """PyTorch's rule: the running variance takes the unbiased batch variance."""
    _, var, _, mean = cache
    unbiased = var * count / max(count - 1, 1)
    return ((1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * unbiased)


def batchnorm_forward_infer(x, gamma, beta, running_mean, running_var, eps):
    scale = gamma / np.sqrt(running_var + eps)
    return scale[None, :, None, None] * (x - running_mean[None, :, None, None]) \
        + beta[None, :, None, None]


def batchnorm_backward_infer(dy, gamma, running_var, eps):
    return dy * (gamma / np.sqrt(running_var + eps))[None, :, None, None]


# ---------------------------------------------------------------------------------------------
# whole networks

def _p(params, name):
    return None if name not in params else np.asarray(params[name], dtype=np.float64)


def run_net(net: ir.Net, params, x, *, train=False, buffers=None, masks=None):
    """Forward through every layer of the graph. -> (output, tape); the tape feeds backward_net.

    buffers: batchnorm running statistics by name (read at inference; in training the updated
    values are left in tape["buffers"]). masks: the dropout keep masks by label, needed in
    training (1 = kept)."""
    x = as_nchw(x, net.input)
    buffers = {k: np.asarray(v, dtype=np.float64) for k, v in (buffers or {}).items()}
    tape, outs = [], []
    for i, layer in enumerate(net.layers):
        reads = [x if j == ir.INPUT else outs[j] for j in net.inputs_of(i)]
        pre, extra = _layer_forward(layer, reads, params, train, buffers, masks)
        fn = getattr(layer, "act", None)
        out = act_forward(pre, fn) if fn is not None else pre
        outs.append(out)
        tape.append((layer, reads, pre, out, extra))
    return outs[-1], {"layers": tape, "train": train, "buffers": buffers}


def _layer_forward(layer, reads, params, train, buffers, masks):
    """One layer's output before its fused activation, and what backward needs of it."""
    x, extra, lab = reads[0], None, layer.label
    match layer:
        case ir.Conv():
            w = dense_weight(_p(params, f"{lab}.weight"), x.shape[1], layer.groups, layer.table)
            return conv_forward(x, w, _p(params, f"{lab}.bias"), layer.stride, layer.pad), w
        case ir.Pool():
            pool = maxpool_forward if layer.mode == "max" else avgpool_forward
            return pool(x, layer.kernel, layer.stride, layer.pad), None
        case ir.Subsample():
            return subsample_forward(x, _p(params, f"{lab}.weight"), _p(params, f"{lab}.bias"),
                                     layer.kernel, layer.stride), None
        case ir.GlobalAvgPool():
            return global_avgpool_forward(x), None
        case ir.FC():
            return fc_forward(x, _p(params, f"{lab}.weight"), _p(params, f"{lab}.bias")), None
        case ir.Act():
            return act_forward(x, layer.fn), None
        case ir.Softmax():
            return softmax_forward(x), None
        case ir.Dropout():
            if not train:
                return x, None
            extra = np.asarray(masks[lab], dtype=np.float64).reshape(x.shape)
            return dropout_forward(x, extra, layer.p), extra
        case ir.BatchNorm():
            gamma, beta = _p(params, f"{lab}.weight"), _p(params, f"{lab}.bias")
            if not train:
                return batchnorm_forward_infer(x, gamma, beta, buffers[f"{lab}.running_mean"],
                                               buffers[f"{lab}.running_var"], layer.eps), None
            y, extra = batchnorm_forward_train(x, gamma, beta, layer.eps)
            if f"{lab}.running_mean" in buffers:
                count = x.shape[0] * x.shape[2] * x.shape[3]
                buffers[f"{lab}.running_mean"], buffers[f"{lab}.running_var"] = \
                    batchnorm_update_running(buffers[f"{lab}.running_mean"],
                                             buffers[f"{lab}.running_var"], extra, count,
                                             layer.momentum)
            return y, extra
        case ir.Flatten():
            return x.reshape(x.shape[0], -1, 1, 1), None
        case ir.Add():
            return sum(reads[1:], reads[0].copy()), None
        case ir.Concat():
            return np.concatenate(reads, axis=1), None
    raise NotImplementedError(layer.kind)


def forward_net(net: ir.Net, params, x, *, train=False, buffers=None, masks=None):
    """The network's output (probabilities after a final softmax), NCHW float64."""
    return run_net(net, params, x, train=train, buffers=buffers, masks=masks)[0]


def net_loss(net: ir.Net, out, y):
    if net.loss == "cross_entropy":
        return -np.log(out.reshape(out.shape[0], -1)[np.arange(len(y)), y]).mean()
    return mse(out, np.asarray(y, dtype=np.float64))


def backward_net(net: ir.Net, params, tape, y):
    """Gradients of the mean loss. -> (grads by parameter name, d loss / d input). A layer's
    output gradient is the sum over the layers that read it."""
    layers = tape["layers"]
    out = layers[-1][3]
    fused = net.loss == "cross_entropy" and isinstance(layers[-1][0], ir.Softmax)
    douts = [None] * len(layers)
    dx = 0.0
    if net.loss == "mse":
        douts[-1] = mse_backward(out, np.asarray(y, dtype=np.float64))
    grads = {}
    for i, (layer, reads, pre, post, extra) in reversed(list(enumerate(layers))):
        if fused and i == len(layers) - 1:
            dreads = [softmax_cross_entropy_backward(out, y)]  # at the softmax's input
        else:
            d = douts[i]
            fn = getattr(layer, "act", None)
            if fn is not None:
                d = act_backward(d, pre, fn)
            dreads = _layer_backward(layer, d, reads, post, extra, params, tape, grads)
        for j, dj in zip(net.inputs_of(i), dreads):
            if j == ir.INPUT:
                dx = dx + dj
            else:
                douts[j] = dj if douts[j] is None else douts[j] + dj
    return grads, dx


def _layer_backward(layer, d, reads, post, extra, params, tape, grads):
    """The gradients of a layer's inputs from that of its output (the fused activation already
    applied); its parameters' gradients go into `grads`."""
    inp, lab = reads[0], layer.label
    match layer:
        case ir.Conv():
            d, dw, db = conv_backward(d, inp, extra, layer.stride, layer.pad)
            grads[f"{lab}.weight"] = sparse_weight(dw, layer.groups, layer.table)
            if layer.bias:
                grads[f"{lab}.bias"] = db
        case ir.Pool():
            back = maxpool_backward if layer.mode == "max" else avgpool_backward
            d = back(d, inp, layer.kernel, layer.stride, layer.pad)
        case ir.Subsample():
            d, grads[f"{lab}.weight"], grads[f"{lab}.bias"] = subsample_backward(
                d, inp, _p(params, f"{lab}.weight"), layer.kernel, layer.stride)
        case ir.GlobalAvgPool():
            d = global_avgpool_backward(d, inp)
        case ir.FC():
            d, dw, db = fc_backward(d, inp, _p(params, f"{lab}.weight"))
            grads[f"{lab}.weight"] = dw
            if layer.bias:
                grads[f"{lab}.bias"] = db
        case ir.Act():
            d = act_backward(d, inp, layer.fn)
        case ir.Softmax():
            d = softmax_backward(d, post)
        case ir.Dropout():
            if tape["train"]:
                d = dropout_backward(d, extra, layer.p)
        case ir.BatchNorm():
            gamma = _p(params, f"{lab}.weight")
            if tape["train"]:
                d, grads[f"{lab}.weight"], grads[f"{lab}.bias"] = \
                    batchnorm_backward_train(d, gamma, extra)
            else:
                rv = tape["buffers"][f"{lab}.running_var"]
                rm = tape["buffers"][f"{lab}.running_mean"]
                xhat = (inp - rm[None, :, None, None]) / np.sqrt(rv + layer.eps)[
                    None, :, None, None]
                grads[f"{lab}.weight"] = (d * xhat).sum(axis=(0, 2, 3))
                grads[f"{lab}.bias"] = d.sum(axis=(0, 2, 3))
                d = batchnorm_backward_infer(d, gamma, rv, layer.eps)
        case ir.Flatten():
            d = d.reshape(inp.shape)
        case ir.Add():
            return [d] * len(reads)
        case ir.Concat():
            cuts = np.cumsum([r.shape[1] for r in reads])[:-1]
            return np.split(d, cuts, axis=1)
        case _:
            raise NotImplementedError(layer.kind)
    return [d]


def loss_and_grad(net: ir.Net, params, x, y, *, train=True, buffers=None, masks=None):
    """-> (mean loss, grads by name, d loss / d x shaped like the NCHW input)."""
    out, tape = run_net(net, params, x, train=train, buffers=buffers, masks=masks)
    grads, dx = backward_net(net, params, tape, y)
    return net_loss(net, out, y), grads, dx


# ---------------------------------------------------------------------------------------------
# optimizers, as PyTorch's SGD (dampening 0) and Adam (L2 decay added to the gradient)

def decayed(net: ir.Net, name: str) -> bool:
    """Weight decay ½λ‖W‖² covers the weights of conv, fc and subsample, not biases or BN."""
    label, suffix = name.rsplit(".", 1)
    return suffix == "weight" and not isinstance(net.layer(label), ir.BatchNorm)


def sgd_step(net, params, grads, velocity, lr, momentum, weight_decay):
    """v = momentum v + g + λW (weights only); W -= lr v. -> (params, velocity), new dicts."""
    new_p, new_v = {}, {}
    for k, w in params.items():
        g = grads[k] + (weight_decay * w if decayed(net, k) else 0.0)
        new_v[k] = momentum * velocity.get(k, 0.0) + g
        new_p[k] = w - lr * new_v[k]
    return new_p, new_v


def adam_step(net, params, grads, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """Step t (from 1): bias-corrected moments. -> (params, m, v), new dicts."""
    new_p, new_m, new_v = {}, {}, {}
    for k, w in params.items():
        g = grads[k] + (weight_decay * w if decayed(net, k) else 0.0)
        new_m[k] = beta1 * m.get(k, 0.0) + (1 - beta1) * g
        new_v[k] = beta2 * v.get(k, 0.0) + (1 - beta2) * g * g
        m_hat, v_hat = new_m[k] / (1 - beta1 ** t), new_v[k] / (1 - beta2 ** t)
        new_p[k] = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return new_p, new_m, new_v


def init_params(net: ir.Net, seed: int = 0, scale: float = 0.5):
    """Random parameters (and batchnorm buffers) for a net, for the reference's own tests.
    -> (params, buffers)."""
    rng = np.random.default_rng(seed)
    params, buffers = {}, {}
    x = np.zeros((1, *net.input))
    outs = []
    for i, layer in enumerate(net.layers):
        lab = layer.label
        reads = [x if j == ir.INPUT else outs[j] for j in net.inputs_of(i)]
        c = reads[0].shape[1]
        match layer:
            case ir.Conv():
                kh, kw = layer.kernel
                if layer.table is not None:
                    n_conn = sum(map(sum, layer.table.rows))
                    params[f"{lab}.weight"] = rng.normal(0, scale, (n_conn, kh, kw))
                else:
                    params[f"{lab}.weight"] = rng.normal(
                        0, scale, (layer.out_channels, c // layer.groups, kh, kw))
                if layer.bias:
                    params[f"{lab}.bias"] = rng.normal(0, scale, layer.out_channels)
            case ir.FC():
                params[f"{lab}.weight"] = rng.normal(0, scale, (layer.units, reads[0][0].size))
                if layer.bias:
                    params[f"{lab}.bias"] = rng.normal(0, scale, layer.units)
            case ir.Subsample() | ir.BatchNorm():
                params[f"{lab}.weight"] = rng.normal(1, scale, c)
                params[f"{lab}.bias"] = rng.normal(0, scale, c)
                if isinstance(layer, ir.BatchNorm):
                    buffers[f"{lab}.running_mean"] = rng.normal(0, scale, c)
                    buffers[f"{lab}.running_var"] = rng.uniform(0.5, 2, c)
        outs.append(_layer_forward(layer, reads, params, False, buffers, None)[0])
    return params, buffers
