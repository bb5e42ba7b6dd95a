"""What reviewers read beyond the seed query: benign-traffic rules, hunting, rule exports."""
