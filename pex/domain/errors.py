"""Domain errors: every refusal the domain can make, raised before anything is recorded."""


class DomainError(Exception):
    """A command was refused; nothing was recorded."""


class IllegalMove(DomainError):
    """The move is not legal in the reservation's current state (paper §3.1)."""

    def __init__(self, move: str, state: str, detail: str = ""):
        self.move, self.state = move, state
        message = f"{move} is not allowed while the reservation is {state}"
        super().__init__(f"{message}: {detail}" if detail else message)


class InvalidProposal(DomainError):
    """The proposal's terms are malformed (unknown size or template, bad counts, past start)."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}: {detail}")


class OfferExpired(DomainError):
    """The provider's offer is no longer valid; its holds may already be gone."""


class CapacityExceeded(DomainError):
    """A node refused a hold or booking that would put it over capacity at some instant."""

    def __init__(self, node: str, detail: str = ""):
        self.node = node
        super().__init__(f"node {node} has not enough free capacity{': ' + detail if detail else ''}")


class NodeUnavailable(DomainError):
    """The node is lost or retired and takes no new holds or bookings."""


class NodeDraining(NodeUnavailable):
    """The node is drained from a time: it takes nothing that would still be there then."""


class CatalogueError(DomainError):
    """An operator's change to sizes, templates or nodes was refused."""
