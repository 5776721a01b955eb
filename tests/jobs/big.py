"""A job for the result table: a huge list, a long string, a dict with tuple keys, a few scalars."""


def run(client, n: int = 100_000) -> dict:
    squares = client.gather(client.map(lambda x: x * x, range(20)))
    return {"total": sum(squares), "label": "big", "hosts": ["127.0.0.1"],
            "numbers": list(range(n)), "essay": "word " * 2000, "pairs": {(1, 2): 3, (4, 5): 9}}
