"""Plug-in targets for the broken-config corpus."""

NOT_CALLABLE = 42


def takes_nothing() -> bool:
    return True


def partner_allows(tag: str | None) -> bool:
    return True
