"""speclearn's learning side: compile feedback into a new spec version.

The stages follow the spec-learning method (propose -> compress -> validate -> synthesize),
adapted to production thumbs, then a gate and a publish step:

    dataset     feedback joined to inferences -> examples, pairs, a held-out split
    pairs_file  or: preference pairs from a CSV/JSONL file (--pairs)
    evidence    measured properties that separate preferred from rejected answers
    propose     candidate rules (from the current spec, the evidence and an LLM)
    compress    merge near-duplicates
    memory      set aside what earlier rounds or live tests refused, until new evidence bears on it
    validate    measure each rule on held-out pairs (checks, or a calibrated judge); top K
    synthesize  edit the spec: the person's text kept, the learned rules in its own section
    proposals   a rule that would change the person's text: held for a person, never applied
    gate        is the candidate better than the current version on held-out feedback?
    explore     or, when held-out feedback cannot tell and canaries are on: try it on the canary
    publish     a new version with its evidence in the front matter

Around them: `text` (the text toolkit every stage shares), `checks` (the rule language: one
registry of check kinds), `llm` (client, cache, budget), `judge`, `prompts`, `principle` (a rule,
its measurement and its verdict: three records), `comments` (reading what users wrote), `outcomes`
(the round's mode and outcome), `voices` (who the feedback came from), `pipeline` (one round, its
inputs a frozen `PreparedRound`), `runner` (lock +
state + metrics around a round), `sidecar` (the loop), `promote` (canary promotion from live
thumbs), `simulate` (simulated users for the demo and the quality benchmark), `report` (the
printout), `commands/` (the CLI).
"""
