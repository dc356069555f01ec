"""Routing tables of the in-process bus, indexed like RabbitMQ's topic trie: routing a
message costs the same with 20 or 20,000 bindings (it walks the key's words, not the list of
bindings), and so does adding or removing one.

Topic patterns: words split on ``.``, ``*`` is exactly one word, ``#`` zero or more.
"""

from __future__ import annotations


class _Node:
    __slots__ = ("children", "queues")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.queues: set[str] = set()


class TopicIndex:
    """(pattern, queue) pairs of one topic exchange."""

    def __init__(self) -> None:
        self._root = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, pattern: str, queue: str) -> bool:
        node = self._root
        for word in pattern.split("."):
            node = node.children.setdefault(word, _Node())
        if queue in node.queues:
            return False
        node.queues.add(queue)
        self._size += 1
        return True

    def remove(self, pattern: str, queue: str) -> bool:
        path: list[tuple[_Node, str]] = []
        node = self._root
        for word in pattern.split("."):
            child = node.children.get(word)
            if child is None:
                return False
            path.append((node, word))
            node = child
        if queue not in node.queues:
            return False
        node.queues.discard(queue)
        self._size -= 1
        for parent, word in reversed(path):  # prune what no longer leads anywhere
            child = parent.children[word]
            if child.queues or child.children:
                break
            del parent.children[word]
        return True

    def remove_queue(self, queue: str) -> None:
        """Every binding of one queue (a deleted queue): walks the whole trie, rare."""

        def walk(node: _Node) -> None:
            if queue in node.queues:
                node.queues.discard(queue)
                self._size -= 1
            for word, child in list(node.children.items()):
                walk(child)
                if not child.queues and not child.children:
                    del node.children[word]

        walk(self._root)

    def match(self, key: str) -> set[str]:
        out: set[str] = set()
        _match(self._root, key.split("."), 0, out)
        return out


def _match(node: _Node, words: list[str], i: int, out: set[str]) -> None:
    hash_node = node.children.get("#")
    if hash_node is not None:  # '#' takes zero or more words
        for j in range(i, len(words) + 1):
            _match(hash_node, words, j, out)
    if i == len(words):
        out.update(node.queues)
        return
    exact = node.children.get(words[i])
    if exact is not None:
        _match(exact, words, i + 1, out)
    star = node.children.get("*")
    if star is not None:
        _match(star, words, i + 1, out)


class FanoutIndex:
    """A fanout exchange: every bound queue, whatever the key."""

    def __init__(self) -> None:
        self._queues: dict[str, set[str]] = {}  # queue -> its binding keys

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._queues.values())

    def add(self, pattern: str, queue: str) -> bool:
        keys = self._queues.setdefault(queue, set())
        if pattern in keys:
            return False
        keys.add(pattern)
        return True

    def remove(self, pattern: str, queue: str) -> bool:
        keys = self._queues.get(queue)
        if not keys or pattern not in keys:
            return False
        keys.discard(pattern)
        if not keys:
            del self._queues[queue]
        return True

    def remove_queue(self, queue: str) -> None:
        self._queues.pop(queue, None)

    def match(self, key: str) -> set[str]:
        return set(self._queues)
