"""A secret-free agent: it calls OpenAI (and Anthropic, when configured)
through keywarden's credential proxy with the official SDKs, configured by
environment only. It never holds a vendor key: OPENAI_API_KEY is a
placeholder (kwp_...) that works only through keywarden, and only for the
paths the registry allows.

    keywarden run --registry examples/configs/proxy-registry.yaml -- \
        python3 examples/agent-openai.py "Say hello"
"""

import os
import sys

import openai

prompt = " ".join(sys.argv[1:]) or "Say hello in five words."
client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from keywarden
model = os.environ.get("AGENT_MODEL", "gpt-4o-mini")

print("streaming:", end=" ", flush=True)
stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": prompt}], stream=True
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()

if os.environ.get("ANTHROPIC_BASE_URL"):
    import anthropic

    reply = anthropic.Anthropic().messages.create(
        model=os.environ.get("AGENT_CLAUDE_MODEL", "claude-3-5-haiku-latest"),
        max_tokens=64,
        messages=[{"role": "user", "content": prompt}],
    )
    print("claude:", reply.content[0].text)

# What the agent holds: a placeholder, never the key.
print("my key is", os.environ["OPENAI_API_KEY"][:8] + "...")
