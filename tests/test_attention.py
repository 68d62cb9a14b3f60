"""--attention M: the single attention head over the top layer's last M states (model/attention.py) is
causal, independent of where the TBPTT windows are cut (its memory carried in the state), stepped
equal to the full forward (single stream, batched, rows selected), resumed bit-exactly, saved and
loaded, sized in closed form, built by evaluation's warm-up, and refused in one line where it cannot
be honoured."""

from __future__ import annotations

import pytest
import torch

import charrnn
from charrnn.data.tokenizers import fit_tokenizer
from charrnn.errors import CharrnnError
from charrnn.evaluation.evaluate import warm_state
from charrnn.generation.interactive import Session
from charrnn.generation.stepper import Runner, Stepper
from charrnn.model import state as states
from charrnn.model.checkpoint import load_checkpoint, load_model, save_checkpoint
from charrnn.model.network import ModelConfig, RNNLM
from charrnn.model.sizes import n_parameters
from charrnn.settings import SAMPLE, defaults
from charrnn.training import memory
from tests.conftest import TINY_TEXT, make_model, train_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

V, H, M = 30, 24, 7

# Tolerance of two computations of the same float32 math whose sums run in another order (other
# chunks of keys, the Stepper's per-step products against the fused kernel): each reordered sum of
# n terms moves by at most n * 2^-24 (6e-8) of the sum of its |terms|; with n <= H + M + 1 = 32
# terms of O(1) values that is <= 2e-6 per stage, and a token passes a handful of stages (the LSTM's
# gates, layer norms, the scores' softmax, the head, log-softmax) through at most 20 recurrent
# steps here, which stays below 1e-4 for log-probabilities of magnitude <= ln V = 3.4. A mixed-up
# row, a dropped memory or a wrong mask moves them by 1e-2 or more (the test checks the attention
# contributes that much).
TOL = dict(atol=1e-4, rtol=1e-5)


def _model(cell="lstm", span=M, layers=2, seed=0) -> RNNLM:
    m = make_model(V, cell, layers=layers, hidden=H, emb=8, seed=seed, attention=span)
    with torch.no_grad():  # gates and query away from their zero start, so the attention matters
        g = torch.Generator().manual_seed(seed + 1)
        for p in m.attn.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
        m.head.weight.mul_(3.0)
    return m


def _ids(B, T, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_future_token_changes_no_earlier_output(cell):
    m, x = _model(cell), _ids(3, 40)
    for t in (5, 23, 39):
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % V
        with torch.no_grad():
            a, _ = m(x)
            b, _ = m(y)
        # exact: a masked score enters the softmax as exp(-inf) = 0 and its value is multiplied by 0, so
        # no arithmetic before t reads the changed token (the same ops on the same values give the same bits)
        assert torch.equal(a[:, :t], b[:, :t])
        assert (a[:, t] - b[:, t]).abs().max() > 1e-3  # the changed token itself does count


def test_the_attention_matters_and_sees_exactly_the_last_m_states():
    """The output at t depends on the last M states: a token M+1 back acts only through the recurrence,
    so a model whose recurrence forgets (zero recurrent weights) sees it through the attention alone."""
    m = _model("rnn", layers=1)
    with torch.no_grad():
        m.rnn.weight_hh_l0.zero_()
        x = _ids(2, 30)
        base, _ = m(x)
        t = 20
        for back, changes in ((M, True), (M + 1, False)):
            y = x.clone()
            y[:, t - back] = (y[:, t - back] + 1) % V
            out, _ = m(y)
            assert bool((out[:, t] - base[:, t]).abs().max() > 1e-3) is changes, back


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_windows_with_the_memory_carried_equal_one_long_forward(cell):
    m, x = _model(cell), _ids(3, 64)
    with torch.no_grad():
        whole, final = m(x)
        parts, state = [], None
        for s in (0, 16, 32, 35, 48):  # windows of 16, 16, 3, 13, 16: shorter and longer than M
            e = {0: 16, 16: 32, 32: 35, 35: 48, 48: 64}[s]
            lp, state = m(x[:, s:e], states.detach(state))
            parts.append(lp)
    torch.testing.assert_close(torch.cat(parts, 1), whole, **TOL)  # TOL: the module docstring's derivation
    torch.testing.assert_close(state[1], final[1], **TOL)
    assert state[1].shape == (M, 3, H)
    with torch.no_grad():
        cold, _ = m(x[:, 48:])
    assert (cold - whole[:, 48:]).abs().max() > 1e-2  # without the carried state it would differ


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_stepping_one_token_at_a_time_equals_the_forward(cell):
    m, x = _model(cell), _ids(1, 20)
    with torch.no_grad():
        want, _ = m(x)
        _, state = m(x[:, :3])
        step = Stepper(m)
        state = step.from_module(state)
        for t in range(3, 20):  # the state has read x[:t]; the step reads x[t] and predicts x[t + 1]
            logp, state = step(x[0, t:t + 1], state)
            torch.testing.assert_close(logp[0], want[0, t], **TOL)  # TOL: derived at its definition
        back = step.to_module(state)  # the stepper's state continues a fused forward
        more = _ids(1, 5, seed=3)
        a, _ = m(torch.cat([x, more], 1))
        b, _ = m(more, back)
        torch.testing.assert_close(b, a[:, 20:], **TOL)


def test_batched_rows_with_selection_equal_each_stream_alone():
    """B streams stepped together (the Runner, rows dropped and reordered as finished samples and beams
    do) equal each stream's own forward: the memory follows its row; no step keeps a graph."""
    m, B, T = _model(), 4, 18
    x = _ids(B, T, seed=5)
    with torch.no_grad():
        want = torch.stack([m(x[b:b + 1])[0][0] for b in range(B)])
        step = Stepper(m)
        state = step.from_module(m(x[:, :1])[1], 1)
        state = tuple(tuple(torch.zeros_like(s).expand(B, *s.shape[1:]).clone() for s in part) for part in state)
    run = Runner(step, state)  # sampling steps the Runner outside no_grad: its weights need no gradient
    assert run.fast  # the in-place LSTM step, then the attention's
    rows = torch.arange(B)
    for t in range(T):
        if t == 9:
            rows = torch.tensor([3, 1, 0])
            run.select(torch.tensor([3, 1, 0]))
        logp = run(x[rows, t])
        torch.testing.assert_close(logp, want[rows, t], **TOL)
    assert not run.state()[-1][0].requires_grad and run.state()[-1][0].shape == (3, M, H)


def test_state_helpers_split_cat_flatten_round_trip():
    h, c, mem = torch.randn(2, 6, 3), torch.randn(2, 6, 3), torch.randn(M, 6, 3)
    st = ((h, c), mem)
    bounds = [(0, 2), (2, 5), (5, 6)]
    back = states.cat(states.split(st, bounds))
    assert all(torch.equal(a, b) for a, b in zip(states.flatten(back), states.flatten(st)))
    flat = states.flatten(st)
    assert len(flat) == 3 and flat[2] is mem
    again = states.unflatten(flat, "lstm", M)
    assert again[0][0] is h and again[0][1] is c and again[1] is mem
    assert states.unflatten([h, mem], "gru", M)[1] is mem and states.unflatten([h], "gru") is h
    sel = states.select(st, torch.tensor([4, 0]))
    assert torch.equal(sel[1], mem[:, [4, 0]])


def test_the_warm_up_builds_the_memory_of_the_rows_with_context():
    m = _model()
    ctx = _ids(3, 20, seed=2)
    ctx[1] = -1  # a stream at the text's start: no context, the zero state
    with torch.no_grad():
        st = warm_state(m, ctx, torch.device("cpu"), "fp32")
        _, direct = m(ctx[[0, 2]])
    assert st[1].shape == (M, 3, H)
    assert torch.equal(st[1][:, 1], torch.zeros(M, H))
    torch.testing.assert_close(st[1][:, [0, 2]], direct[1], **TOL)
    torch.testing.assert_close(st[0][0][:, [0, 2]], direct[0][0], **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("tied", [False, True])
def test_the_closed_form_size_counts_the_module(cell, tied):
    cfg = ModelConfig(vocab_size=V, cell=cell, layers=2, hidden=H, emb=H if tied else 8, tie_weights=tied,
                      attention=M)
    m = RNNLM(cfg)
    assert n_parameters(V, cell, 2, H, cfg.emb, "full", (), tied, M) == m.num_parameters()
    assert m.num_parameters() - RNNLM(ModelConfig(**{**cfg.__dict__, "attention": 0})).num_parameters() == H * H + 8 * H


def test_checkpoint_round_trip_keeps_the_attention(tmp_path):
    m = _model()
    tok = fit_tokenizer("char", "".join(chr(97 + i) for i in range(V)))
    assert tok.vocab_size == V
    path = str(tmp_path / "a.pt")
    save_checkpoint(path, model=m, tokenizer=tok, run_config={})
    ckpt = load_checkpoint(path)
    assert ckpt["model_config"]["attention"] == M
    loaded, _, _ = load_model(path)
    x = _ids(2, 25)
    with torch.no_grad():
        assert torch.equal(m(x)[0], loaded(x)[0])
    assert "attention" not in make_model(V).cfg.to_dict()  # unset: a file older charrnn reads


@pytest.fixture(scope="module")
def attention_run(tmp_path_factory):
    corpus, ckdir = train_tiny(tmp_path_factory.mktemp("attn"), "tiny", "--max-steps", "20", "--attention", "6")
    return ckdir / "tiny", corpus, ckdir


def test_a_trained_run_keeps_its_memory_and_samples_as_the_forward_reads(attention_run):
    run_dir, _, _ = attention_run
    ckpt = load_checkpoint(str(run_dir / "last.pt"))
    hidden = ckpt["train_state"]["hidden"]
    assert [tuple(h.shape) for h in hidden] == [(1, 4, 32), (1, 4, 32), (6, 4, 32)]  # h, c, the memory
    model = charrnn.load(run_dir, device="cpu")
    text = model.sample("the ", temp=0, length=40)
    mod, tok = model.module, model.tokenizer
    ids = torch.as_tensor(tok.encode(text), dtype=torch.long).view(1, -1)
    with torch.no_grad():
        logp, _ = mod(ids)
    # greedy: each generated token is the forward's argmax at its position (the stepped memory is the
    # forward's); a near-tie within TOL could flip one, so the check allows none where the top two differ by more
    gen = ids[0, 4:]
    top2 = logp[0, 3:-1].topk(2, -1)
    clear = (top2.values[:, 0] - top2.values[:, 1]) > 1e-3
    assert torch.equal(gen[clear], top2.indices[clear, 0])


def test_interactive_turns_continue_one_text(attention_run):
    model = charrnn.load(attention_run[0], device="cpu")
    s = Session(model, {**defaults(SAMPLE), "temp": 0.0, "length": 20})
    a = "".join(s.reply("the "))
    assert a == model.sample("the ", temp=0, length=20)[4:]
    b = "".join(s.reply("fox "))
    assert b == model.sample("the " + a + "fox ", temp=0, length=20)[len("the " + a + "fox "):]


@pytest.mark.slow
@pytest.mark.numerics
def test_resume_is_bit_exact(cli, tmp_path):
    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT[:1800], encoding="utf-8")
    flags = ["--layers", 2, "--hidden", 24, "--emb", 8, "--batch-size", 4, "--seq-len", 16, "--precision", "fp32",
             "--device", "cpu", "--eval-every", 10, "--save-every", 7, "--log-every", 5, "--seed", 3,
             "--min-lr-frac", 1, "--attention", 5, "--dropout", 0.2]
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "whole", "--max-steps", 30, *flags)
    assert r.code == 0, r.err
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--name", "parts", "--max-steps", 13, *flags)
    assert r.code == 0, r.err
    r = cli("train", "--resume", tmp_path / "parts", "--checkpoint-dir", tmp_path, "--max-steps", 30)
    assert r.code == 0, r.err
    whole, parts = (load_checkpoint(str(tmp_path / n / "last.pt")) for n in ("whole", "parts"))
    assert whole["train_state"]["step"] == parts["train_state"]["step"] == 30
    for k in whole["model"]:
        assert torch.equal(whole["model"][k], parts["model"][k]), k
    for a, b in zip(whole["train_state"]["hidden"], parts["train_state"]["hidden"]):
        assert torch.equal(a, b)


def test_bad_input_is_one_line_before_anything_is_written(cli, tmp_path, attention_run):
    run_dir, corpus, ckdir = attention_run
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--attention", -2, "--max-steps", 1)
    assert r.code != 0 and r.err.count("\n") == 1 and "--attention must not be negative" in r.err
    assert not any(tmp_path.iterdir())
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--attention", 10 ** 9, "--max-steps", 1)
    assert r.code != 0 and r.err.count("\n") == 1 and "lower --attention (now 1000000000)" in r.err
    assert not (tmp_path / corpus.stem).exists()  # no run directory
    r = cli("train", "--resume", run_dir, "--checkpoint-dir", ckdir, "--attention", 3)
    assert r.code != 0 and "cannot change --attention when resuming" in r.err
    r = cli("train", corpus, "--checkpoint-dir", tmp_path, "--init-from", run_dir, "--attention", 3)
    assert r.code != 0 and "contradicts the model being fine-tuned" in r.err
    out = tmp_path / "a.onnx"
    r = cli("export", run_dir, "--format", "onnx", "-o", out)
    assert r.code != 0 and "does not export --attention models" in r.err and not out.exists()
    r = cli("export", run_dir, "--format", "pt", "-o", tmp_path / "w.pt")
    assert r.code == 0, r.err


def test_memory_refuses_a_span_too_large_and_names_the_flag():
    kw = dict(vocab=100, cell="lstm", layers=2, hidden=256, emb=64, batch=32, window=128)
    plain, big = memory.estimate(**kw), memory.estimate(**kw, attention=8192)
    assert big["parts"]["attention"] > 10 * plain["parts"]["activations"]
    assert big["parameters"] - plain["parameters"] == 256 * 256 + 8 * 256

    class Cfg:
        attention, batch_size, seq_len, hidden, layers, head = 8192, 32, 128, 256, 2, "full"

    with pytest.raises(CharrnnError, match=r"lower --attention \(now 8192\)"):
        memory.check(big, int(plain["total"] * 2), Cfg, torch.device("cpu"))
    memory.check(plain, int(plain["total"] * 2), Cfg, torch.device("cpu"))  # without it the run fits


def test_zero_is_off():
    m = make_model(V, attention=0)
    assert m.attn is None
    _, st = m(_ids(2, 5))
    assert isinstance(st, tuple) and len(st) == 2 and st[0].shape == (1, 2, 32)  # an LSTM's (h, c) as before


def test_torchrun_ranks_take_their_rows_of_the_memory():
    """Every leaf of the saved state has the streams on dim 1, the memory too: a rank's rows of it
    are re-sliced with the (h, c) rows (distributed.reslice, the same code for every leaf)."""
    from charrnn.training.distributed import reslice

    h, c, mem = torch.randn(2, 6, 3), torch.randn(2, 6, 3), torch.randn(M, 6, 3)
    part = reslice({"hidden": [h, c, mem], "world_size": 2, "rng": "r0", "rank_rng": ["r0", "r1"]}, 2, 1, None)
    assert [tuple(t.shape) for t in part["hidden"]] == [(2, 3, 3), (2, 3, 3), (M, 3, 3)]
    assert torch.equal(part["hidden"][2], mem[:, 3:])


def test_finetuning_with_new_characters_keeps_the_attention(attention_run):
    from charrnn.data.tokenizers import adapt_vocab
    from charrnn.model.checkpoint import model_from_checkpoint
    from charrnn.training.finetune import start_model

    ckpt = load_checkpoint(str(attention_run[0] / "best.pt"))
    src, old_tok = model_from_checkpoint(ckpt)
    text = TINY_TEXT[:400] + "@Ω"
    tok, _ = adapt_vocab(old_tok, old_tok.unknown_chars(text), "extend")
    model = start_model(ckpt, tok, tok.encode(text), 0.0)
    assert model.cfg.attention == 6 and tok.vocab_size == old_tok.vocab_size + 2
    for (name, a), b in zip(model.attn.state_dict().items(), src.attn.state_dict().values()):
        assert torch.equal(a, b), name
