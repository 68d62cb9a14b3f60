"""Sample from a model exported by `charrnn export MODEL --format onnx`, with numpy and onnxruntime only.

    python examples/onnx_sample.py shakespeare.onnx --prime "ROMEO:" --length 300 --temp 0.8 --seed 1

With --temp 0 it prints exactly what `charrnn sample MODEL --prime TEXT --temp 0` prints on stdout.
"""
import argparse, base64, codecs, json, sys  # noqa: E401
import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("model"), ap.add_argument("--prime", default=""), ap.add_argument("--seed", type=int)
ap.add_argument("--length", type=int, default=500), ap.add_argument("--temp", type=float, default=1.0)
a = ap.parse_args()
sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
meta = json.loads(sess.get_modelmeta().custom_metadata_map["charrnn"])  # vocabulary, sizes, start token
vocab, state_names = meta["vocab"], meta["state"]
if vocab["kind"] == "char":
    index = {c: i for i, c in enumerate(vocab["codepoints"])}
    encode, piece = (lambda s: [index[ord(ch)] for ch in s]), (lambda i: chr(vocab["codepoints"][i]).encode())
elif vocab["kind"] == "byte":
    encode, piece = (lambda s: list(s.encode())), (lambda i: bytes([i]))
else:  # bpe/unigram: pieces decode with the metadata alone; a prime needs sentencepiece's encoder
    piece = lambda i: bytes([p]) if isinstance(p := vocab["pieces"][i], int) else p.encode()  # noqa: E731
    encode = lambda s: __import__("sentencepiece").SentencePieceProcessor(  # noqa: E731
        model_proto=base64.b64decode(vocab["sentencepiece"])).encode(s)
state = {n: np.zeros((meta["layers"], 1, meta["hidden"]), np.float32) for n in state_names}


def run(ids):  # tokens (1, T) and the state in; the last position's log-probabilities out
    logp, *new = sess.run(None, {"tokens": np.array([ids], np.int64), **state})
    state.update(zip(state_names, new))
    return logp[0, -1]


try:
    logp = run(encode(a.prime) if a.prime else [meta["start_id"]])
except KeyError as e:
    sys.exit(f"error: the prime has a character the model never saw: {chr(e.args[0])!r}")
rng, dec, text = np.random.default_rng(a.seed), codecs.getincrementaldecoder("utf-8")("replace"), a.prime
sys.stdout.write(a.prime)
for _ in range(a.length):
    p = np.exp((logp - logp.max()) / a.temp) if a.temp > 0 else None
    token = int(np.argmax(logp)) if p is None else int(rng.choice(len(p), p=p / p.sum()))
    text += (new := dec.decode(piece(token)))
    sys.stdout.write(new)
    logp = run([token])
tail = dec.decode(b"", final=True)  # a partial UTF-8 sequence at the end, replaced
text += tail
sys.stdout.write(tail + ("" if text.endswith("\n") else "\n"))  # charrnn sample ends with a line break
