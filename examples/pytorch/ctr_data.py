"""The synthetic click stream of examples/ctr_stream.c, vectorized with
numpy: example i of stream s is the same example as in the C demos (the
same feature ids, the same planted click probability, the same label), so
AUCs compare across them. Stream 1 trains, stream 2 is held out.

Each example has one value per field, drawn from a Zipf distribution over
the field's vocabulary, turned into a feature id with
pskv.feature_id(value as 4 little-endian bytes, ns=field name), and a click
drawn from a planted logistic model."""
import numpy as np

import pskv

FIELDS = ("site", "app", "device", "hour", "adslot", "banner", "region", "user_segment")
VOCAB = (500, 2000, 5000, 24, 50, 300, 1000, 10000)
PLANTED_BIAS, PLANTED_SCALE, ZIPF_S = -1.6, 0.6, 1.05
HELD_OUT = 200000
OFFSETS = np.concatenate([[0], np.cumsum(VOCAB)[:-1]])
TOTAL_VOCAB = int(sum(VOCAB))
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _unit_at(s, k):
    """unit() of the C stream after k+1 increments of the state s."""
    return (_mix(s + _GOLDEN * np.uint64(k + 1)) >> np.uint64(11)).astype(np.float64) * 2.0**-53


class Stream:
    def __init__(self):
        with np.errstate(over="ignore"):
            self.cdf = []
            self.ids = []
            self.weight = []
            for f, (name, n) in enumerate(zip(FIELDS, VOCAB)):
                c = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -ZIPF_S)
                self.cdf.append(c / c[-1])
                values = np.arange(n, dtype=np.uint32)
                self.ids.append(pskv.feature_ids([v.tobytes() for v in values], ns=name)
                                .view(np.int64))
                s = _mix((np.uint64(f) << np.uint64(32)) ^ values.astype(np.uint64) ^
                         np.uint64(0x1234567))
                u1 = 1.0 - _unit_at(s, 0)
                u2 = _unit_at(s, 1)
                self.weight.append(PLANTED_SCALE * np.sqrt(-2 * np.log(u1)) *
                                   np.cos(6.283185307179586 * u2))

    def examples(self, stream: int, start: int, n: int):
        """(ids int64 (n, 8), labels float32 (n,), planted p (n,), index
        (n, 8): each value's position in one dense vocabulary of all
        fields, for models that need indices in [0, total_vocab))."""
        with np.errstate(over="ignore"):
            i = np.arange(start, start + n, dtype=np.uint64)
            s = _mix(np.uint64(stream) * _GOLDEN + i)
            ids = np.empty((n, len(FIELDS)), dtype=np.int64)
            index = np.empty((n, len(FIELDS)), dtype=np.int64)
            logit = np.full(n, PLANTED_BIAS)
            for f in range(len(FIELDS)):
                v = np.searchsorted(self.cdf[f], _unit_at(s, f), side="left")
                v = np.minimum(v, VOCAB[f] - 1)
                ids[:, f] = self.ids[f][v]
                index[:, f] = OFFSETS[f] + v
                logit += self.weight[f][v]
            p = 1.0 / (1.0 + np.exp(-logit))
            label = (_unit_at(s, len(FIELDS)) < p).astype(np.float32)
        return ids, label, p, index


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC by the rank-sum formula, ties sharing ranks."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts          # 0-based rank of each distinct score
    ranks = (first + (counts + 1) / 2.0)[inverse]
    y = labels
    pos = y.sum()
    neg = len(y) - pos
    return float((ranks[y > 0.5].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(p: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
