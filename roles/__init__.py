"""The lab's roles: each a packaged pyinfra deploy with prefixed, documented defaults."""
