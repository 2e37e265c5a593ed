"""SELF's training objective: records laid out as sequences, the three-term loss, and fine-tuning on them.

``log P(f | p, r) + log P(r' | p, r, f) + beta * log P(r' | p)``: one sequence ``p r f r'`` carries the first two
terms, ``p r'`` the third.
"""

from __future__ import annotations

import numpy as np
import torch

from criticgym.selfevolve.config import SelfConfig
from criticgym.utils.training import adam, autocast

FEEDBACK, REFINEMENT, ANSWER = 1, 2, 3  # the loss terms a target token belongs to


def encode(tokenizer, layout, record: dict[str, str], beta: float) -> list[tuple[list[int], list[int], float]]:
    """The training sequences of one record: ``(ids, term of each token (0: context), weight of the sequence)``.

    A meta-skill record gives ``p r f r'`` (feedback and refinement terms) and ``p r'`` (the answer term, weight
    ``beta``); a question-answer record gives ``p r`` (the answer term, weight 1). Pieces are tokenized one by one,
    as generation sees them, and every target ends with EOS except the feedback (a critique ends at its judgement).
    """

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    eos = [tokenizer.eos_token_id]
    if "feedback" not in record:
        prompt, answer = ids(record["prompt"]), ids(record["response"]) + eos
        return [(prompt + answer, [0] * len(prompt) + [ANSWER] * len(answer), 1.0)]
    context = ids(layout.critique_context(record["prompt"], record["response"]))
    feedback, glue = ids(record["feedback"]), ids(layout.refine)
    refinement = ids(record["refinement"]) + eos
    both = context + feedback + glue + refinement
    terms = [0] * len(context) + [FEEDBACK] * len(feedback) + [0] * len(glue) + [REFINEMENT] * len(refinement)
    prompt = ids(record["prompt"])
    return [(both, terms, 1.0), (prompt + refinement, [0] * len(prompt) + [ANSWER] * len(refinement), beta)]


def collate(sequences: list[tuple[list[int], list[int], float]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, the term of each position and the weight of each sequence."""
    width = max(len(s[0]) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    terms = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (seq, term, _) in enumerate(sequences):
        ids[i, : len(seq)], terms[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), torch.tensor(term), 1
    weights = torch.tensor([s[2] for s in sequences], dtype=torch.float32)
    return {"ids": ids.to(device), "mask": mask.to(device), "terms": terms.to(device), "weights": weights.to(device)}


def self_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Minus the SELF objective: per term, the weighted mean negative log-likelihood of its target tokens, summed.

    Returns the loss and each term's mean NLL (``nll/feedback``, ``nll/refinement``, ``nll/answer``; nan when the
    batch has none of it). The answer term's weight is ``beta`` on meta-skill sequences, 1 on question-answer ones.
    """
    logits = model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits[:, :-1].float()
    targets, terms = batch["ids"][:, 1:], batch["terms"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    weight = batch["weights"][:, None].expand_as(nll)
    loss, stats = nll.new_zeros(()), {}
    for term, name in ((FEEDBACK, "feedback"), (REFINEMENT, "refinement"), (ANSWER, "answer")):
        chosen = terms == term
        if chosen.any():
            loss = loss + (nll * weight)[chosen].sum() / chosen.sum()
            stats[f"nll/{name}"] = float(nll[chosen].detach().mean())
        else:
            stats[f"nll/{name}"] = float("nan")
    return loss, stats


def length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator, group: int = 8):
    """One epoch of minibatches (lists of indices) of similar lengths, so that little of a batch is padding.

    Shuffles, cuts the order into groups of ``group`` batches, sorts each group by length, splits it into batches
    and shuffles the batches (the scheme of Hugging Face's ``group_by_length``). Every index appears once.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    for start in range(0, len(order), batch_size * group):
        chunk = sorted(order[start : start + batch_size * group], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def fine_tune(model, tokenizer, layout, records: list[dict[str, str]], cfg: SelfConfig, seed: int, log=None):
    """Train on records (meta-skill and question-answer mixed) for ``cfg.epochs``; returns token counts and NLLs."""
    from tqdm.auto import tqdm

    sequences = [s for r in records for s in encode(tokenizer, layout, r, cfg.beta)]
    if not sequences:
        return {"train_tokens": 0, "target_tokens": 0}
    device = next(model.parameters()).device
    optimizer = adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, decoupled=True)
    generator = torch.Generator().manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokens = targets = 0
    stats: dict[str, list[float]] = {}
    model.train()
    steps = cfg.epochs * -(-len(sequences) // cfg.batch_size)
    bar = tqdm(total=steps, disable=not cfg.progress, desc="fine-tune", unit="step", leave=False)
    for _ in range(cfg.epochs):
        for chunk in length_grouped_batches([len(s[0]) for s in sequences], cfg.batch_size, generator):
            batch = collate([sequences[i] for i in chunk], pad, device)
            with autocast(cfg.precision, device):
                loss, terms = self_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            tokens += int(batch["mask"].sum())
            targets += int((batch["terms"] > 0).sum())
            for key, value in terms.items():
                stats.setdefault(key, []).append(value)
            bar.update()
    bar.close()
    model.eval()
    means = {k: float(np.mean([x for x in v if not np.isnan(x)] or [np.nan])) for k, v in stats.items()}
    return {"train_tokens": tokens, "target_tokens": targets, **means}  # nan: a term no batch had
