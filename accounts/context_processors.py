from accounts.roles import user_role


def role(request):
    current = user_role(request.user) if hasattr(request, "user") else None
    return {"role": current.value if current else ""}
