"""The tables: every setting of ``charrnn train`` (TRAIN), ``sample`` (SAMPLE), ``eval`` (EVAL) and
``score`` (SCORE), each defined once and listed under its topic. Adding a training setting is one
``Setting(...)`` entry in TRAIN: the click option, the ``charrnn.train(...)`` keyword, its
validation and whether ``--resume`` may change it all follow."""

from __future__ import annotations

from charrnn.settings.setting import (TOKENIZERS, CELLS, HEADS, PRECISIONS, DEVICES, SPLITS, DEFAULT_MAX_EPOCHS,
                                      ADAPTIVE_DROPOUT, AUTO_PATIENCE,
                                      CHECKPOINT_DIR, Setting, grouped)

S = Setting
POS = dict(type=int, min=1)
TRAIN = grouped(
    "data",  # and the tokenizer
    S("corpus", str, "pystdlib", "The text to train on: a UTF-8 file, or the built-in 'pystdlib' corpus.",
      resumable=True),
    S("tokenizer", str, "char", "char: Unicode characters; byte: UTF-8 bytes; bpe/unigram: sentencepiece.",
      choices=TOKENIZERS),
    S("vocab_size", default=512, help="Vocabulary size of a bpe/unigram tokenizer.", **POS),
    S("val_frac", float, 0.05, "Fraction of the text (after train) held out for validation.", min=0, max=1,
      max_open=True),
    S("test_frac", float, 0.05, "Fraction of the text (at the end) held out for testing.", min=0, max=1,
      max_open=True),
    S("val_file", str, None, "Validate on this file instead of a slice of the corpus.", optional=True,
      resumable=True, metavar="PATH"),
    S("records", str, None, "The corpus is independent records, each ending in SEP (e.g. `\\n`: one per line; the "
      "escapes `\\n`, `\\t`, `\\\\` are read): each is modelled from a fresh state, its ending SEP included.",
      optional=True, metavar="SEP", escapes=True),
    S("batch_size", default=32, help="Parallel streams per step (B).", **POS),
    S("seq_len", default=128, help="Window length T of truncated backprop through time.", **POS),
    "model",
    S("cell", str, "lstm", "Recurrent cell: the fused lstm, gru, rnn, or qrnn, sru (parallel scans: fast to "
      "train), indrnn, janet, lstm-peephole (docs/cells.md).", choices=CELLS),
    S("layers", default=2, help="Stacked recurrent layers.", **POS),
    S("hidden", default=512, help="Hidden units per layer.", **POS),
    S("emb", default=64, help="Embedding size.", **POS),
    S("attention", int, 0, "Attend over the top layer's last M hidden states (SHA-RNN's single head, a memory "
      "carried across windows; docs/guides/attention.md); 0: off.", min=0, metavar="M"),
    "regularisation",
    S("dropout", float, 0.1, "Dropout on embeddings, between layers and before the output layer.", min=0, max=1,
      max_open=True),
    S("locked_dropout", bool, False, "Make --dropout locked (variational): one mask per sequence, shared across "
      "time, on the embedding output, between layers and before the output layer.", negatable=True),
    S("weight_drop", float, 0.0, "DropConnect on the recurrent weights W_hh (AWD-LSTM): each is dropped with this "
      "probability per step (the fused kernel is kept; training only).", min=0, max=1, max_open=True, metavar="P"),
    S("embed_dropout", float, 0.0, "Drop whole rows of the embedding matrix (every occurrence of a token in a step) "
      "with this probability.", min=0, max=1, max_open=True, metavar="P"),
    "model",
    S("tie_weights", bool, False, "Share embedding and output weights (needs --emb equal to --hidden).",
      negatable=True),
    S("head", str, "auto", "Output layer: full softmax, or adaptive softmax (cheap for big vocabularies, e.g. "
      "Chinese); auto: adaptive above 1024 tokens.", choices=HEADS),
    S("init_from", str, None, "Fine-tune: start a new run from this checkpoint's weights and tokenizer (a run "
      "directory: its best.pt); the architecture comes from it.", optional=True, metavar="CKPT|RUN_DIR"),
    S("extend_vocab", bool, False, "With --init-from: add the characters the model never saw to its vocabulary."),
    S("skip_unknown", bool, False, "With --init-from: drop the characters the model never saw from the text."),
    "optimisation",
    S("lr", float, 3e-3, "Peak learning rate (AdamW). Under --max-time, when not given, the plan sets it from its "
      "steps: higher for a short run.", min=0, min_open=True),
    S("min_lr_frac", float, 0.1, "Final learning rate as a fraction of --lr (cosine decay).", min=0, max=1),
    S("warmup", int, 30, "Linear warmup steps.", min=0),
    S("weight_decay", float, 0.01, "AdamW weight decay on weight matrices.", min=0),
    S("grad_clip", float, 1.0, "Clip the global gradient norm to this (0: off).", min=0),
    "regularisation",
    S("ema", float, 0.0, "Keep an exponential moving average of the weights with this decay (e.g. 0.999; 0: off); "
      "evaluations and best.pt use the averaged weights.", min=0, max=1, max_open=True, metavar="DECAY"),
    S("variable_len", bool, False, "Randomized truncation (AWD-LSTM): each step's window length is drawn around "
      "--seq-len (up to 1.2x), and the learning rate scaled by length / --seq-len.", negatable=True),
    S("adaptive_dropout", bool, None, f"Raise --dropout by {ADAPTIVE_DROPOUT['step']:g} (up to "
      f"{ADAPTIVE_DROPOUT['max']:g}) at each evaluation where validation stopped improving while it stood "
      f"{ADAPTIVE_DROPOUT['gap']:g} nats/token or more above the training loss: the run is memorising its text "
      "(default: on with --max-time unless --dropout is given, else off).", negatable=True, optional=True,
      resumable=True),
    "budget",  # when to stop, and on what
    S("max_steps", int, None, "Stop after this many steps.", min=1, optional=True, resumable=True),
    S("max_epochs", float, None, f"Stop after this many passes over the training text ({DEFAULT_MAX_EPOCHS} if no "
      "limit is given).", min=0, min_open=True, optional=True, resumable=True),
    S("max_time", float, None, "Stop within this wall time for the whole run, from its start to its last file "
      "(start-up, the budget's probe, evaluations and saves included); the LR schedule fits the budget.",
      min=0, min_open=True, optional=True, resumable=True, metavar="SECONDS"),
    S("budget", bool, True, "With --max-time: choose the layers, hidden size, batch, window, evaluation "
      "interval and peak learning rate not given, for this machine and this budget (a short probe, cached per "
      "machine; --no-budget: the fixed defaults).", negatable=True, resumable=True),
    S("patience", int, None, f"Stop early after this many evaluations without improvement, leaving the rest of the "
      f"time unspent (0: never; default: {AUTO_PATIENCE} with --max-time, whose evaluations are planned for it, else never).",
      min=0, optional=True, resumable=True, metavar="N"),
    "output",
    S("eval_every", default=200, help="Evaluate on the validation split (--eval-tokens of it) every N steps.",
      resumable=True, **POS),
    S("eval_tokens", int, 131072, "Evaluations score this many tokens of the validation split, the same ones "
      "each time, spread over it (0: all), so best.pt is chosen like with like; at the end best.pt is scored on "
      "every token, as `charrnn eval` does.",
      min=0, resumable=True, metavar="N"),
    S("save_every", default=200, help="Write last.pt every N steps (also at the end and on Ctrl-C).",
      resumable=True, **POS),
    S("sample_every", int, None, "Every N steps print a short sample beside the evaluation line and record it in "
      "metrics.jsonl (split \"sample\"); the same seed each time, so successive samples show what the model "
      "learned (a records run: a few records, one per line). Off unless given.", min=1, optional=True,
      resumable=True, metavar="N"),
    S("sample_length", int, 200, "Tokens of each --sample-every sample (a records run: at most this many per "
      "record).", min=1, resumable=True, metavar="N"),
    S("sample_prime", str, "", "Text the --sample-every samples start from (default: a new line; the escapes "
      "`\\n`, `\\t`, `\\\\` are read).", resumable=True, metavar="TEXT", escapes=True),
    S("keep_checkpoints", int, None, "Also keep the K most recent evaluated checkpoints as "
      "step-<n>-val-<loss>.pt (the oldest removed first; list them with charrnn runs RUN).", min=1,
      optional=True, resumable=True, metavar="K", rule="a positive integer (how many to keep)"),
    S("tensorboard", bool, False, "Write TensorBoard event files to RUN/tensorboard: losses, bits/char, learning "
      "rate, gradient norm, tokens/s and the --sample-every samples (needs pip install 'charrnn[tensorboard]').",
      resumable=True),
    S("log_every", default=50, help="Record train loss to metrics.jsonl every N steps.", resumable=True, **POS),
    "optimisation",
    S("seed", int, 1337, "Random seed."),
    "budget",
    S("device", str, "auto", "auto: CUDA if present, else Apple's MPS, else the CPU.", choices=DEVICES,
      resumable=True),
    S("precision", str, "auto", "auto: bf16 autocast on CPUs with AMX, fp32 (TF32 matmuls) elsewhere.",
      choices=PRECISIONS, resumable=True),
    "optimisation",
    S("skip_nonfinite", bool, False, "Skip (and count) batches with a non-finite loss or gradient instead of "
      "stopping.", resumable=True),
    "output",
    S("name", str, None, "Run name (default: from the corpus file name).", optional=True, resumable=True),
    S("checkpoint_dir", str, CHECKPOINT_DIR, "Directory that holds the runs: a new run goes to DIR/<name>/; --resume looks up a run NAME, "
      "or the latest run, here.",
      resumable=True, metavar="DIR"),
    S("cache_max_gb", float, 20.0, "Encoded corpora kept in DIR/.cache (see `charrnn cache`) up to this size; the "
      "least recently used are evicted first.", min=0, min_open=True, resumable=True, metavar="GB"),
)

SAMPLE = grouped(
    "sampling",
    S("temp", float, 0.8, "Sampling temperature; 0 is greedy (always the most likely token). A comma list "
      "(0.5,0.8,1.0) gives one labelled sample per temperature.", min=0, rule="0 (greedy) or positive",
      listed=True),
    "stopping",
    S("length", int, 1000, "Tokens to generate (per sample; an upper bound when a sample may stop earlier).",
      min=0),
    "prime",
    S("prime_file", str, None, "Start from the text of this UTF-8 file (used verbatim) instead of --prime.",
      optional=True, metavar="PATH"),
    "sampling",
    S("top_k", int, 0, "Sample among the k most likely (0: all).", min=0),
    S("top_p", float, 1.0, "Nucleus sampling: among the most likely tokens whose probabilities add up to P "
      "(1: off); applied after --temp and --top-k.", min=0, max=1, min_open=True, metavar="P"),
    S("seed", int, None, "Random seed: the same seed gives the same text.", optional=True),
    S("num_samples", int, 1, "Generate N samples at once, as N parallel streams of one batch.", min=1, metavar="N"),
    "stopping",
    S("stop", str, (), "End a sample right after it generates this text (repeatable; a newline in bash: "
      "$'\\n').", multiple=True, metavar="TEXT"),
    S("strip_stop", bool, False, "Leave the stop text out of the sample."),
    S("max_lines", int, None, "End a sample after it generates N line breaks.", min=1, optional=True,
      metavar="N"),
    S("line_starts", str, None, "Begin each line with the next of these characters (acrostic; the first line "
      "too when the prime is empty or ends a line); end after the last one's line.", optional=True,
      metavar="CHARS"),
    "sampling",
    S("beam", int, None, "Beam search with K beams: the most likely text of --length tokens (deterministic; "
      "--num-samples up to K best).", min=1, optional=True, metavar="K"),
    "device",
    S("precision", str, "fp32", "Matrix products of each step. fp32: a seed gives the same text for a checkpoint "
      "on every CPU. bf16: inputs rounded to bfloat16 (states and output layer fp32), 1.5-1.8x faster on CPUs "
      "that multiply bf16 in hardware (measured with AVX512-BF16: docs/BENCHMARKS.md); the same samples in "
      "distribution, not the same text; elsewhere it says so and samples in fp32. auto: fp32.",
      choices=("fp32", "bf16", "auto")),
    "prime",
    S("skip_unknown", bool, False, "Drop prime characters the model never saw."),
    S("novel", bool, False, "A records run: keep only the samples that are not a record of the training split "
      "(exact match); --json marks every sample \"in_train\" either way."),
)

SCORING_PRECISION = S("precision", str, "auto", "auto: the precision the run trained with on this device.",
                      choices=PRECISIONS, group="device")
EVAL = grouped(
    "text",
    S("split", str, "val", "Which held-out part of the run's corpus to score.", choices=SPLITS),
    SCORING_PRECISION,
    S("skip_unknown", bool, False, "Drop characters of --file the model never saw."),
    S("baselines", bool, True, "Also the bits/char of gzip -9, bz2 -9, xz -9 and the order-0 entropy on the same "
      "text (its first 4 MiB; a few seconds), to say how good the model's figure is.", negatable=True),
    "dynamic",
    S("dynamic", bool, False, "Dynamic evaluation: after scoring each segment, one SGD step on it, so the model "
      "adapts to the text (weights restored afterwards; the checkpoint is not changed)."),
    S("dyn_lr", float, 0.1, "Learning rate of the --dynamic SGD steps (on a segment's mean nll).", min=0),
    S("dyn_seq", int, 50, "Tokens per --dynamic segment: each is scored, then trained on.", min=1),
    S("dyn_decay", float, 0.0, "Pull towards the trained weights per --dynamic step: theta += decay * (theta_0 "
      "- theta).", min=0, max=1),
)
DYNAMIC = ("dyn_lr", "dyn_seq", "dyn_decay")  # the settings that only act with --dynamic

SCORE = grouped(
    "scoring",
    S("independent", bool, False, "Score every line on its own, from a fresh state after a newline (to rank "
      "candidate lines); default: the text as one continuous stream."),
    S("per_char", bool, False, "Add each character's surprisal in bits (\"surprisal\": [...] per line, with --json)."),
    S("skip_unknown", bool, False, "Drop characters the model never saw (counted per line as \"skipped\")."),
    SCORING_PRECISION,
)
