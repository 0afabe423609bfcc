"""The window's widgets: header, sidebar, transcript, composer, banners and dialogs."""
