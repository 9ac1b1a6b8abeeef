"""Sparse cryo-ET particle picker: spconv U-Net on sparse voxel sets, voting, clustering."""
