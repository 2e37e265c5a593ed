"""Cross-cutting helpers, each written once: statistics, plotting, seeding, atomic files, trainer weights."""
