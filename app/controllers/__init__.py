"""Controllers: what the window does on a user action (chats, models, attachments, downloads, the local API)."""
