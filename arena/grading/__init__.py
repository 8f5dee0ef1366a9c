"""Whether an answer is right: assertions and exact reference checks first, then model graders and judges."""
