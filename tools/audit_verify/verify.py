#!/usr/bin/env python3
"""An independent verifier of agent-gateway audit exports, written from docs/audit-format.md
alone (Python 3 and the `cryptography` package; no code of the project).

    verify.py --records records.jsonl --checkpoints checkpoints.jsonl \
              --pubkey KEYFILE [--pubkey KEYFILE ...] --expect-stream ID [...] \
              [--witness checkpoints.jsonl ...]

Inputs are `gateway-audit export --jsonl` and `--jsonl --checkpoints`. Exit 0 when every check
passes, 1 on a fault (printed), 2 on a usage error."""
import argparse, decimal, hashlib, json, re, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.exceptions import InvalidSignature

DOMAIN = b"agent-gateway audit checkpoint v1\n"
ZEROS = "0" * 64


def jcs_number(v):
    if isinstance(v, bool):
        raise TypeError
    if isinstance(v, int):
        if abs(v) <= 2 ** 53:
            return str(v)
        v = float(v)  # JCS writes the nearest double
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError("non-finite number")
    if v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    r = repr(v)
    if "e" in r:
        mant, exp = r.split("e")
        e = int(exp)
        if -7 < e < 21:
            return format(decimal.Decimal(r), "f")
        return f"{mant}e{'+' if e > 0 else '-'}{abs(e)}"
    return r


def jcs(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return jcs_number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(v[k]) for k in keys) + "}"
    raise TypeError(type(v))


def no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l, object_pairs_hook=no_duplicates) for l in f if l.strip()]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--records", required=True)
    p.add_argument("--checkpoints", required=True)
    p.add_argument("--pubkey", action="append", default=[], required=True)
    p.add_argument("--expect-stream", action="append", default=[], required=True)
    p.add_argument("--witness", action="append", default=[])
    a = p.parse_args()
    keys = {}
    for f in a.pubkey:
        k = open(f).read().strip().lower()
        keys[k] = Ed25519PublicKey.from_public_bytes(bytes.fromhex(k))
    faults = []
    streams = {}
    for r in lines(a.records):
        streams.setdefault(r["stream_id"], []).append(r)
    cps = {}
    for c in lines(a.checkpoints):
        cps.setdefault(c["stream_id"], []).append(c)
    witnessed = {}
    for w in a.witness:
        for c in lines(w):
            witnessed.setdefault(c["stream_id"], []).append(c)
    for s in sorted(set(streams) | set(cps)):
        if s not in a.expect_stream:
            faults.append(f"{s}: unexpected stream")
    for s in a.expect_stream:
        recs = sorted(streams.get(s, []), key=lambda r: r["sequence"])
        if not recs:
            faults.append(f"{s}: expected stream is missing")
            continue
        hashes, prev, bad = {}, ZEROS, None
        for i, r in enumerate(recs):
            if r["sequence"] != i:
                bad = f"record {i}: missing (found sequence {r['sequence']})"
                break
            if r["prev_hash"] != prev:
                bad = f"record {i}: prev_hash does not link to record {i - 1}"
                break
            body = {k: v for k, v in r.items() if k not in ("prev_hash", "hash")}
            if i == 0 and (body.get("kind") != "genesis" or body.get("resource") != f"audit-stream:{s}"):
                bad = "record 0 is not the stream's genesis"
                break
            h = hashlib.sha256(bytes.fromhex(prev) + jcs(body).encode("utf-8")).hexdigest()
            if h != r["hash"]:
                bad = f"record {i}: hash does not match its content (modified)"
                break
            hashes[i], prev = h, h
        if bad:
            faults.append(f"{s}: {bad}")
            continue
        head = len(recs) - 1
        last_key, last_seq = None, 0
        for c in sorted(cps.get(s, []), key=lambda c: c["sequence"]):
            key = keys.get(c["key_id"].lower())
            if key is None:
                faults.append(f"{s}: checkpoint {c['sequence']} signed by an untrusted key {c['key_id']}")
                break
            msg = DOMAIN + jcs({k: c[k] for k in ("head_hash", "sequence", "stream_id", "time")}).encode()
            try:
                key.verify(bytes.fromhex(c["signature"]), msg)
            except (InvalidSignature, ValueError):
                faults.append(f"{s}: checkpoint {c['sequence']}: signature does not verify")
                break
            if c["sequence"] > head:
                faults.append(f"{s}: checkpoint {c['sequence']} beyond the last record {head} (truncated)")
                break
            if hashes[c["sequence"]] != c["head_hash"]:
                faults.append(f"{s}: checkpoint {c['sequence']} names another head (rewritten)")
                break
            kid = c["key_id"].lower()
            if last_key is not None and kid != last_key and not any(
                r["kind"] == "key_rotated"
                and str(r.get("details", {}).get("previous_key_id", "")).lower() == last_key
                and str(r.get("details", {}).get("key_id", "")).lower() == kid
                for r in recs[last_seq + 1 : c["sequence"] + 1]
            ):
                faults.append(f"{s}: checkpoint key changed at {c['sequence']} without a key_rotated record")
                break
            last_key, last_seq = kid, c["sequence"]
        logged = {c["sequence"]: c["head_hash"] for c in cps.get(s, [])}
        newest = None
        for w in witnessed.get(s, []):
            newest = max(newest or 0, w["sequence"])
            if w["sequence"] > head:
                faults.append(f"{s}: log ends at {head}, witnessed checkpoint at {w['sequence']} (tail removed)")
                break
            if w["sequence"] not in logged:
                faults.append(f"{s}: witnessed checkpoint {w['sequence']} missing from the log")
                break
            if logged[w["sequence"]] != w["head_hash"]:
                faults.append(f"{s}: witnessed head at {w['sequence']} differs (rewritten)")
                break
        if not any(f.startswith(f"{s}:") for f in faults):
            tail = "" if newest is None else f", {head - newest} records after the newest witnessed checkpoint"
            print(f"OK     {s}: {len(recs)} records{tail}")
    for f in faults:
        print(f"FAILED {f}")
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
