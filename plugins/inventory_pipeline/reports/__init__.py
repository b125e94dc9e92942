"""Rule results, policy, the HTML report and right-sizing advice."""
