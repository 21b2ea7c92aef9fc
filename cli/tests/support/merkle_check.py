"""An independent implementation of the ledger's Merkle rule (rewards/README.md),
sharing no code with hexroad: rebuilds the tree from the ledger's amounts,
checks the root, and checks every proof.

    merkle_check.py LEDGER.json

Exits non-zero naming the first mismatch; prints {"verified": N}.
"""

import hashlib
import json
import sys


def leaf(epoch, contributor, amount):
    return hashlib.sha256(
        b"\x00" + epoch.encode() + b"\x00" + contributor.encode() + b"\x00" + amount.to_bytes(8, "big")
    ).digest()


def parent(a, b):
    lo, hi = sorted([a, b])
    return hashlib.sha256(b"\x01" + lo + hi).digest()


def root_of(leaves):
    if not leaves:
        return bytes(32)
    level = leaves
    while len(level) > 1:
        level = [
            parent(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
            for i in range(0, len(level), 2)
        ]
    return level[0]


def main():
    ledger = json.load(open(sys.argv[1]))
    epoch = ledger["epoch"]
    rewards = ledger["rewards"]
    ids = [r["contributor_id"] for r in rewards]
    if ids != sorted(ids, key=lambda s: s.encode()):
        sys.exit("rewards are not in contributor_id order")
    if sum(r["amount"] for r in rewards) != ledger["total"]:
        sys.exit("the amounts do not add up to total")
    leaves = [leaf(epoch, r["contributor_id"], r["amount"]) for r in rewards]
    root = root_of(leaves)
    if root.hex() != ledger["merkle_root"]:
        sys.exit(f"rebuilt root {root.hex()} is not the ledger's {ledger['merkle_root']}")
    for r, h in zip(rewards, leaves):
        for sibling in r["proof"]:
            h = parent(h, bytes.fromhex(sibling))
        if h != root:
            sys.exit(f"the proof for {r['contributor_id']} does not lead to the root")
    print(json.dumps({"verified": len(rewards)}))


if __name__ == "__main__":
    main()
