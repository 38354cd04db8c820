// Harvest: MALT's trees turned into training data — finished tree jobs into
// nodes with their credit (trees.jsonl), each role's SFT positives and DPO
// sibling pairs in TRL's formats, and the summary. It reads job records; it
// must not talk to the broker or run a model.
